"""How a worker process ended, in words a user can act on."""

from __future__ import annotations

import re
import signal

SIGNAL_WORDS = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "floating-point exception",
    "SIGABRT": "abort",
    "SIGKILL": "killed",
    "SIGTERM": "terminated",
    "SIGINT": "interrupted",
}
# faulthandler's dump: '  File "/path/mod.py", line 12 in fn'; the innermost frame comes first
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<fn>\S+)', re.MULTILINE)


def describe_exit(returncode: int | None) -> str:
    """'segmentation fault (SIGSEGV)', 'exit status 0', ... for a ``Popen.returncode``."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        words = SIGNAL_WORDS.get(name)
        return f"{words} ({name})" if words else name
    return f"exit status {returncode}"


def last_frame(log: str) -> str | None:
    """The innermost Python frame of a faulthandler dump in ``log`` in the user's own code (not
    normcheck's engine, the standard library or an installed package, unless nothing else is
    there), as 'file.py:12 in fn'; None when the log holds no dump."""
    import sysconfig

    dump = log.rfind("Fatal Python error")
    if dump < 0:
        return None
    libraries = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})
    frames = [m for m in _FRAME.finditer(log, dump) if "/normcheck/engine/" not in m["file"]]
    own = [m for m in frames if not m["file"].startswith(libraries) and not m["file"].startswith("<")]
    for m in own or frames:
        return f"{m['file']}:{m['line']} in {m['fn']}"
    return None


def escaped(e: BaseException) -> str:
    """A BaseException that left user code (it is caught in the worker, so the run goes on)."""
    if isinstance(e, SystemExit):
        return f"the code called sys.exit({e.code!r})"
    if isinstance(e, KeyboardInterrupt):
        return "the code raised KeyboardInterrupt (not a Ctrl-C: normcheck's workers do not receive it)"
    text = str(e).strip().splitlines()
    return f"the code raised {type(e).__name__}" + (f": {text[0]}" if text else "")
