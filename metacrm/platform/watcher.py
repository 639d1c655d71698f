"""Development file watcher: reload tenants when their definitions change."""

from __future__ import annotations

import threading
from collections.abc import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .runtime import Platform, ReloadReport


class _Debounced(FileSystemEventHandler):
    def __init__(self, callback: Callable[[], None], delay: float) -> None:
        self.callback = callback
        self.delay = delay
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        # reads (the compiler's own included) change nothing; a save by rename moves a
        # temporary file onto the definition, so the destination counts too
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if not any(path.endswith((".yaml", ".yml")) for path in paths):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay, self.callback)
            self._timer.daemon = True
            self._timer.start()


def watch(platform: Platform, report: Callable[[ReloadReport], None],
          delay: float = 0.3) -> Observer:
    """Start watching metadata/ and tenants/; every change reloads every active tenant."""
    def reload_all() -> None:
        for result in platform.reload_all():
            report(result)

    handler = _Debounced(reload_all, delay)
    observer = Observer()
    for folder in (*platform.library.modules_dirs, platform.library.tenants_dir):
        if folder.is_dir():
            observer.schedule(handler, str(folder), recursive=True)
    observer.daemon = True
    observer.start()
    return observer
