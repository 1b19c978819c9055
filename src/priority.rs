// SPDX-License-Identifier: MPL-2.0
//! The model's threads run below the streaming threads: on a CPU the model
//! takes every core it is given, and a frame that has to leave in time
//! (keeping up with a clock) must not wait behind it for a core. The model
//! still has every core that nothing else needs. No GStreamer types.

/// How much lower (in nice steps) the model's threads run: at +10 a thread
/// weighs a tenth of a normal one in Linux's scheduler.
pub const INFERENCE_NICE_STEPS: i32 = 10;

/// Lowers the calling thread's priority by [`INFERENCE_NICE_STEPS`]. On
/// Linux the nice value is the thread's own, and threads it starts
/// (ONNX Runtime's pool, made with the session) inherit it. Elsewhere,
/// nothing. Lowering needs no privilege; a failure only leaves it as is.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, with no
    // pointers.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // -1 is also a valid nice value: clear errno to tell them apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return;
        }
        let lower = (now + INFERENCE_NICE_STEPS).min(19);
        libc::setpriority(libc::PRIO_PROCESS, tid, lower);
    }
}

/// Runs `f` on a thread of its own at the model's priority, so that what
/// it starts (ONNX Runtime's threads, when it makes a session) runs there
/// too; returns its result, or the panic's message.
pub fn on_inference_priority<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    // Rayon's global pool, which prepares and composes frames, is made by
    // whoever uses it first, with that thread's priority: were it `f` (the
    // bf16 calibration prepares pictures), every frame's resizing would run
    // at the model's priority from then on. Made here, it keeps the caller's.
    let _ = rayon::current_num_threads();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("u2netmatte-load".into())
            .spawn_scoped(s, || {
                lower_this_thread();
                f()
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|panic| crate::engine::panic_message(&*panic))
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn the_model_thread_and_what_it_starts_run_lower() {
        let here = nice_of_this_thread();
        let (there, started) = on_inference_priority(|| {
            let started = std::thread::spawn(nice_of_this_thread).join().unwrap();
            (nice_of_this_thread(), started)
        })
        .unwrap();
        let expected = (here + INFERENCE_NICE_STEPS).min(19);
        assert_eq!((there, started), (expected, expected));
        assert_eq!(nice_of_this_thread(), here, "the caller keeps its own");
    }

    #[test]
    fn rayon_work_started_from_the_model_thread_keeps_the_callers_priority() {
        let here = nice_of_this_thread();
        let workers = on_inference_priority(|| {
            let mut nices = Vec::new();
            rayon::broadcast(|_| nice_of_this_thread())
                .into_iter()
                .for_each(|n| nices.push(n));
            nices
        })
        .unwrap();
        assert!(!workers.is_empty());
        assert!(
            workers.iter().all(|&n| n == here),
            "{workers:?}, caller {here}"
        );
    }

    #[test]
    fn a_panic_becomes_its_message() {
        let result: Result<(), String> = on_inference_priority(|| panic!("no session"));
        assert_eq!(result, Err("no session".to_string()));
    }
}
