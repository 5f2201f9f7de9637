"""Where ``aiotlspool bench`` runs its load generators: an event loop in a thread of this
process, or one per worker process (``--processes``), each with its own loop and pools.

The command's main thread only coordinates and draws the progress view: it sends each worker a
command (``warmup`` or ``slice``) and collects the replies; Ctrl-C there asks every worker to
stop, and what they measured still comes back. Worker processes are started with ``spawn``
(never a fork of a process with threads) and ignore SIGINT: their parent tells them to stop,
and they stop by themselves when it is gone (their pipe reads EOF). Their live counters for
the progress view are shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, MutableSequence
from multiprocessing.connection import Connection as Pipe
from typing import Any, Protocol, cast

from ..exceptions import ConnectError
from .bench_load import LIVE_FIELDS, LoadGenerator
from .bench_options import BenchOptions
from .loops import LoopName, loop_factory, run

# ("warmup", mode) | ("slice", mode, duration, connections, live offset) | ("stop",) | ("quit",)
Command = tuple[Any, ...]
# ("ok", result) | ("connect_error", exception class name, message) | ("crash", text)
Reply = tuple[Any, ...]


class Worker(Protocol):
    live: MutableSequence[int]

    def start(self) -> None: ...
    def send(self, command: Command) -> None: ...
    def receive(self, timeout: float) -> Reply | None: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


def start_workers(options: BenchOptions) -> list[Worker]:
    """One load generator in a thread, or ``--processes`` worker processes."""
    workers: list[Worker] = []
    if options.processes == 1:
        workers.append(ThreadWorker(options, 0))
    else:
        context = multiprocessing.get_context("spawn")
        workers.extend(ProcessWorker(options, i, context) for i in range(options.processes))
    try:
        for worker in workers:
            worker.start()
    except BaseException:
        for worker in workers:
            worker.close()
        raise
    return workers


async def serve(
    generator: LoadGenerator,
    commands: asyncio.Queue[Command],
    reply: Callable[[Reply], None],
) -> None:
    """Carry out commands one at a time until ``quit``; then close the pools."""
    try:
        while True:
            command = await commands.get()
            if command[0] == "quit":
                return
            try:
                if command[0] == "warmup":
                    result: object = await generator.warm_up(command[1])
                else:
                    result = await generator.run_slice(*command[1:])
            except ConnectError as exc:
                reply(("connect_error", type(exc).__name__, str(exc)))
            except Exception as exc:
                reply(("crash", f"{type(exc).__name__}: {exc}"))
            else:
                reply(("ok", result))
    finally:
        await generator.close()


class ThreadWorker:
    """The load generator on an event loop in a thread of this process (--processes 1)."""

    def __init__(self, options: BenchOptions, worker: int) -> None:
        self.live: MutableSequence[int] = [0] * (LIVE_FIELDS * len(options.modes))
        self._options = options
        self._worker = worker
        self._replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commands: asyncio.Queue[Command] | None = None
        self._generator: LoadGenerator | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"aiotlspool-bench-{worker}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        try:
            run(self._main(), loop_factory(cast(LoopName, self._options.loop)))
        except BaseException as exc:  # (reported to the main thread, which raises it)
            self._replies.put(("crash", f"{type(exc).__name__}: {exc}"))
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._commands = asyncio.Queue()
        self._generator = LoadGenerator(self._options, self._worker, self.live)
        self._ready.set()
        await serve(self._generator, self._commands, self._replies.put)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended
                self._loop.call_soon_threadsafe(callback, *args)

    def send(self, command: Command) -> None:
        if self._commands is not None:
            self._call(self._commands.put_nowait, command)

    def receive(self, timeout: float) -> Reply | None:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            if not self._thread.is_alive():
                return ("crash", "the load generator's thread ended")
            return None

    def interrupt(self) -> None:
        if self._generator is not None:
            self._call(self._generator.request_stop)

    def close(self) -> None:
        self.send(("quit",))
        if self._thread.is_alive():
            self._thread.join(10)


class ProcessWorker:
    """The load generator in a worker process of its own (--processes 2 and more)."""

    def __init__(
        self, options: BenchOptions, worker: int, context: multiprocessing.context.SpawnContext
    ) -> None:
        size = LIVE_FIELDS * len(options.modes)
        self.live = cast(MutableSequence[int], context.RawArray("q", size))
        self._pipe, child = context.Pipe()
        self._child: Pipe | None = child
        self._process = context.Process(
            target=process_main,
            args=(child, options, worker, self.live),
            name=f"aiotlspool-bench-{worker}",
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()
        if self._child is not None:
            self._child.close()  # EOF reaches the worker only once no process holds this end
            self._child = None

    def send(self, command: Command) -> None:
        with contextlib.suppress(OSError):
            self._pipe.send(command)

    def receive(self, timeout: float) -> Reply | None:
        try:
            if self._pipe.poll(timeout):
                return cast(Reply, self._pipe.recv())
        except (EOFError, OSError):
            pass
        else:
            if self._process.is_alive():
                return None
        code = self._process.exitcode
        return ("crash", f"worker process {self._process.pid} exited (exit code {code})")

    def interrupt(self) -> None:
        self.send(("stop",))

    def close(self) -> None:
        self.send(("quit",))
        if self._process.pid is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
        self._pipe.close()


def process_main(pipe: Pipe, options: BenchOptions, worker: int, live: Any) -> None:
    """A worker process: serve the parent's commands on a loop of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent asks for the results
    try:
        run(_serve_pipe(pipe, options, worker, live), loop_factory(cast(LoopName, options.loop)))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("crash", f"{type(exc).__name__}: {exc}"))


async def _serve_pipe(pipe: Pipe, options: BenchOptions, worker: int, live: Any) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Command] = asyncio.Queue()
    generator = LoadGenerator(options, worker, cast(MutableSequence[int], live))

    def forward(callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has ended
            loop.call_soon_threadsafe(callback, *args)

    def read() -> None:  # a thread: blocking reads of the pipe, so "stop" arrives at once
        while True:
            try:
                command = pipe.recv()
            except (EOFError, OSError):
                command = ("quit",)  # the parent is gone
            if command[0] in ("stop", "quit"):
                forward(generator.request_stop)
            if command[0] != "stop":
                forward(commands.put_nowait, command)
            if command[0] == "quit":
                return

    threading.Thread(target=read, name="aiotlspool-bench-pipe", daemon=True).start()
    await serve(generator, commands, pipe.send)


__all__ = ["Command", "Reply", "Worker", "start_workers"]
