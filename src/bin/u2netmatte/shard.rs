// SPDX-License-Identifier: MPL-2.0
//! `--shard K/N`: which of the inputs this worker takes, when N workers (a
//! Kubernetes Indexed Job, a Slurm array) split one folder.
//!
//! A file belongs to shard `FNV-1a(file name) mod N`: every machine agrees
//! whatever order its file system lists the folder in, and a file keeps its
//! shard when others are added or removed.

use std::path::Path;
use std::str::FromStr;

use gstu2netmatte::stable_hash::fnv1a64;

/// Where `--shard auto/N` reads its index from, in this order.
pub const INDEX_VARIABLES: [&str; 2] = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

/// `--shard` as given: the index, or `auto` to read it from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardArg {
    index: Option<u32>,
    count: u32,
}

/// One shard of N, K counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not K/N (K counted from 0) nor auto/N"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|e| format!("the N of '{s}' is not a count: {e}"))?;
        if count == 0 {
            return Err(format!("'{s}': N must be at least 1"));
        }
        let index = match k.trim() {
            "auto" => None,
            k => {
                let index: u32 = k
                    .parse()
                    .map_err(|e| format!("the K of '{s}' is not an index nor auto: {e}"))?;
                check(index, count, s)?;
                Some(index)
            }
        };
        Ok(Self { index, count })
    }
}

fn check(index: u32, count: u32, given: &str) -> Result<(), String> {
    if index >= count {
        return Err(format!(
            "shard {index} of {count} ({given}) does not exist: K counts from 0 to {}",
            count - 1
        ));
    }
    Ok(())
}

impl ShardArg {
    /// The shard, `auto` taken from the first of [`INDEX_VARIABLES`] that
    /// `var` gives.
    pub fn resolve(self, var: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let index = match self.index {
            Some(index) => index,
            None => {
                let (name, value) = INDEX_VARIABLES
                    .iter()
                    .find_map(|name| var(name).map(|v| (*name, v)))
                    .ok_or_else(|| {
                        format!(
                            "--shard auto/{} takes its index from {}, and neither is set",
                            self.count,
                            INDEX_VARIABLES.join(" or ")
                        )
                    })?;
                let index: u32 = value
                    .trim()
                    .parse()
                    .map_err(|e| format!("{name}={value} is not a shard index (0, 1, ...): {e}"))?;
                check(index, self.count, &format!("{name}={value}")).map_err(|e| {
                    if name == "SLURM_ARRAY_TASK_ID" {
                        format!("{e}: run the array as --array=0-{}", self.count - 1)
                    } else {
                        e
                    }
                })?;
                index
            }
        };
        Ok(Shard {
            index,
            count: self.count,
        })
    }
}

impl Shard {
    /// Whether `input` is this shard's, by its file name alone.
    pub fn takes(&self, input: &Path) -> bool {
        let name = input.file_name().map_or_else(
            || input.to_string_lossy().into_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        fnv1a64(&[name.as_bytes()]) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn shards_are_disjoint_cover_the_inputs_and_ignore_folders_and_order() {
        let names: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("in/p{i}.jpg")))
            .collect();
        let mut counts = [0usize; 4];
        for name in &names {
            let owners: Vec<u32> = (0..4)
                .filter(|&k| Shard { index: k, count: 4 }.takes(name))
                .collect();
            assert_eq!(owners.len(), 1, "{} in {owners:?}", name.display());
            counts[owners[0] as usize] += 1;
            // The same name in another folder is in the same shard.
            let elsewhere = Path::new("/mnt/other").join(name.file_name().unwrap());
            assert!(
                Shard {
                    index: owners[0],
                    count: 4
                }
                .takes(&elsewhere)
            );
        }
        // FNV-1a spreads 200 names over 4 shards, none empty or doubled.
        assert!(counts.iter().all(|&c| (25..=75).contains(&c)), "{counts:?}");
        // One shard of one takes everything.
        assert!(names.iter().all(|n| Shard { index: 0, count: 1 }.takes(n)));
    }

    #[test]
    fn k_over_n_is_parsed_and_checked() {
        let parsed = |s: &str| s.parse::<ShardArg>();
        assert_eq!(
            parsed("2/5").unwrap().resolve(env(&[])),
            Ok(Shard { index: 2, count: 5 })
        );
        assert_eq!(
            parsed("5/5").unwrap_err(),
            "shard 5 of 5 (5/5) does not exist: K counts from 0 to 4"
        );
        assert_eq!(parsed("1/0").unwrap_err(), "'1/0': N must be at least 1");
        assert!(parsed("3").unwrap_err().contains("is not K/N"));
        assert!(
            parsed("x/3")
                .unwrap_err()
                .contains("is not an index nor auto")
        );
        assert!(parsed("1/y").unwrap_err().contains("is not a count"));
    }

    #[test]
    fn auto_takes_the_index_from_kubernetes_or_slurm() {
        let auto = "auto/4".parse::<ShardArg>().unwrap();
        assert_eq!(
            auto.resolve(env(&[("JOB_COMPLETION_INDEX", "3")])),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            auto.resolve(env(&[("SLURM_ARRAY_TASK_ID", "1")])),
            Ok(Shard { index: 1, count: 4 })
        );
        // Kubernetes first, when both are set.
        assert_eq!(
            auto.resolve(env(&[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("JOB_COMPLETION_INDEX", "2")
            ])),
            Ok(Shard { index: 2, count: 4 })
        );
        assert_eq!(
            auto.resolve(env(&[])).unwrap_err(),
            "--shard auto/4 takes its index from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, \
             and neither is set"
        );
        assert_eq!(
            auto.resolve(env(&[("SLURM_ARRAY_TASK_ID", "4")]))
                .unwrap_err(),
            "shard 4 of 4 (SLURM_ARRAY_TASK_ID=4) does not exist: K counts from 0 to 3: \
             run the array as --array=0-3"
        );
        assert!(
            auto.resolve(env(&[("JOB_COMPLETION_INDEX", "one")]))
                .unwrap_err()
                .starts_with("JOB_COMPLETION_INDEX=one is not a shard index")
        );
    }
}
