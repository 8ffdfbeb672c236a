"""Run an :class:`Emulator` on a port: in a background thread (tests, benchmarks) or in the
foreground (``manage.py run_exchange_emulator``)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from execution.emulator.server import Emulator, EmulatorConfig


class EmulatorThread:
    """An emulator serving on 127.0.0.1 from a daemon thread; use as a context manager.

    ``base_url`` is ``http://127.0.0.1:<port>``; python-binance's futures URL is
    ``base_url + "/fapi"``. Calls into ``emulator`` from another thread must go through
    :meth:`call` so that they run on the server's event loop.
    """

    def __init__(self, config: EmulatorConfig, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
        self.port = port
        self.emulator: Emulator | None = None
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="emulator", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.emulator = Emulator(self.config)
            self._runner = web.AppRunner(self.emulator.app(), handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
            self.port = int(self._runner.addresses[0][1])  # port 0: the one the OS gave us
        except BaseException as exc:  # report start-up failures to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"emulator failed to start: {self._error}") from self._error
        return self

    def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run ``fn(*args, **kwargs)`` on the emulator's loop and return its result."""

        async def run():  # type: ignore[no-untyped-def]
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(config: EmulatorConfig, *, host: str, port: int) -> None:
    """Serve in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    emulator = Emulator(config)
    web.run_app(emulator.app(), host=host, port=port, print=None)
