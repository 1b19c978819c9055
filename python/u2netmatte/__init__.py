"""u2netmatte from Python: the GStreamer element on numpy arrays, and on Ray Data.

`Matte` runs frames of any sizes through one `u2netmatte` element
(`appsrc ! u2netmatte ! appsink`); `u2netmatte.ray` runs it over a Ray
cluster, one pipeline per actor, from and to folders or object stores.
"""

from .matte import MODES, Matte, MatteError

__all__ = ["MODES", "Matte", "MatteError"]
__version__ = "0.1.0"
