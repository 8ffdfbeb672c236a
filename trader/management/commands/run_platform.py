"""Run the platform on one machine: migrate, ensure an admin, then web, worker and beat together.

This is ``make run``. It needs nothing but this checkout: with no ``DATABASE_URL`` or
``REDIS_URL`` it uses SQLite and the embedded broker under ``var/``. Output of every process is
shown with its name; Ctrl-C (or SIGTERM) stops them all cleanly; if one dies, all are stopped
and the exit status is non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from config.startup import enforce_startup_config
from trader.services import demo_superuser_ensure

STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]


def platform_processes(*, port: int) -> list[ProcessSpec]:
    """The processes of a one-machine platform, in start order."""
    python = sys.executable
    manage = str(settings.BASE_DIR / "manage.py")
    queues = ",".join((*settings.CELERY_QUEUES_BY_KIND, settings.CELERY_TASK_DEFAULT_QUEUE))
    return [
        ProcessSpec("web", [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"]),
        ProcessSpec(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                queues,
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
            ],
        ),
        ProcessSpec(
            "beat",
            [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--pidfile="],
        ),
    ]


class Supervisor:
    """Starts processes, prefixes their output, and stops them all together."""

    def __init__(self, specs: list[ProcessSpec], out: Any) -> None:
        self.specs = specs
        self.out = out
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._print_lock = threading.Lock()
        self._stopping = threading.Event()

    def _pump(self, name: str, proc: subprocess.Popen[str]) -> None:
        for line in proc.stdout or ():
            with self._print_lock:
                self.out.write(f"{name:>7} | {line.rstrip()}\n")
                self.out.flush()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for spec in self.specs:
            proc = subprocess.Popen(
                spec.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=settings.BASE_DIR,
                # Own process group: Ctrl-C reaches only us, and we stop the children in order.
                start_new_session=True,
            )
            self.procs[spec.name] = proc
            threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True).start()

    def wait(self) -> int:
        """Block until a stop is asked for (0) or a process dies on its own (1)."""
        while not self._stopping.is_set():
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None:
                    self.out.write(f"platform: {name} exited with status {code}; stopping all\n")
                    return 1
            self._stopping.wait(0.5)
        return 0

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, **options: Any) -> None:
        enforce_startup_config("platform")
        call_command("migrate", interactive=False, verbosity=0)
        password = demo_superuser_ensure()
        port = options["port"]
        self.stdout.write(
            f"platform: DJANGO_ENV={settings.DJANGO_ENV} TRADING_MODE={settings.TRADING_MODE}"
        )
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
        self.stdout.write(f"platform: database {engine}, broker {broker}")
        if password:
            self.stdout.write(
                f"platform: created superuser 'admin' with one-time password {password} "
                "(shown once; change it in the admin)"
            )
        self.stdout.write(
            f"platform: admin http://127.0.0.1:{port}/admin/  API docs "
            f"http://127.0.0.1:{port}/api/docs/  ready http://127.0.0.1:{port}/readyz"
        )
        supervisor = Supervisor(platform_processes(port=port), self.stdout)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: supervisor.request_stop())
        supervisor.start()
        try:
            status = supervisor.wait()
        finally:
            self.stdout.write("platform: stopping")
            supervisor.stop()
            self.stdout.write("platform: stopped")
        if status:
            raise SystemExit(status)
