"""``python -m coordexp.launch server_gpus=0,1,2 train_gpus=3 config=C [--dry-run] [-- run args]``: server mode in one go.

Starts the vLLM rollout server(s) of ``vllm.server.servers`` on ``server_gpus`` (``cpu`` for development),
waits until each answers ``/health`` (or exits, then its log tail is shown), runs the learner
(``python -m coordexp.run --config C``) on ``train_gpus``, and tears the servers down when the learner ends,
fails or the launcher gets SIGINT/SIGTERM (each server runs in its own process group, which is signalled
as a whole: vLLM's engine and workers go with it). ``--dry-run`` prints the exact commands and exits.

Other arguments: ``server_tp=N`` (tensor parallel per server, default 1), ``vllm_gpu_memory_utilization=F``
(overrides the config's for the servers), ``cpu_kv_cache_mib=M`` (the CPU form's KV cache, default 256),
``wait_timeout=S`` (server start, default 900). Arguments after ``--`` go to ``coordexp.run`` (``--set k=v``).
Exit codes: the learner's; 2 for invalid arguments or config; 3 when a server does not come up.
Commands and process handling live here; what they are is ``coordexp.launch_plan``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from coordexp.backends.server_api import VllmApi
from coordexp.bind.server import bind_server
from coordexp.config import load, validate
from coordexp.errors import ConfigError, ConfigWarning
from coordexp.launch_plan import (
    Command,
    LaunchArgs,
    check_topology,
    launch_env,
    learner_command,
    parse_args,
    server_commands,
)

EXIT_CONFIG, EXIT_SERVER = 2, 3
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 30
CONFIG_READS = ("tuner.lora_rank", "tuner.train_type", "training.output_dir")


class ServerStartError(RuntimeError):
    """A server exited or stayed unhealthy while the launcher waited for it."""


class ServerProcess:
    """One started server: its process group, its log file, and a health wait that notices an early exit."""

    def __init__(self, command: Command, log_path: Path) -> None:
        self.command, self.log_path = command, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(command.argv, env=launch_env(os.environ, command.env), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds until ``/health`` answered; ServerStartError if the process exits or time runs out."""
        assert self.command.base_url is not None
        api, t0 = VllmApi(self.command.base_url), time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.command.role} exited with code {self.proc.returncode} before it was "
                                       f"healthy; last lines of {self.log_path}:\n{self.log_tail()}")
            if api.healthy() is None:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise ServerStartError(f"{self.command.role} at {self.command.base_url} was not healthy after "
                                       f"{timeout_s:g} s (wait_timeout); last lines of {self.log_path}:\n{self.log_tail()}")
            time.sleep(1.0)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``; idempotent."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _signal_group(self.proc.pid, signal.SIGKILL)  # workers the engine left behind in its group
        self._log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def plan_commands(args: LaunchArgs) -> tuple[list[Command], Command, Path]:
    """The server and learner commands of a launch, from its validated config, and the folder for server logs."""
    check_topology(args)
    loaded = load(args.config, overrides=_overrides(args.run_args))
    env = {"WORLD_SIZE": "1"}  # the one learner process check_topology allows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)  # the learner prints them when it validates the same config
        validate(loaded.config, env=env, display=loaded.display, locate=loaded.locate, source=args.config)
    config = loaded.config
    rm = config.rollout_matching
    plan = bind_server(config) if rm is not None else None
    if plan is None:
        raise ConfigError(f"{args.config}: the launcher starts vLLM servers, so the config needs "
                          "rollout_matching.rollout_backend: vllm and vllm.mode: server with vllm.server.servers")
    lora_rank = config.tuner.lora_rank if config.tuner.train_type == "lora" else None
    logs = Path(config.training.output_dir) / "vllm_server_logs"
    return server_commands(args, plan, lora_rank=lora_rank), learner_command(args), logs


def _overrides(run_args: Sequence[str]) -> list[str]:
    """The ``--set k=v`` pairs among the run arguments (the launcher reads the config the learner will read)."""
    out, items = [], list(run_args)
    for i, arg in enumerate(items):
        if arg == "--set" and i + 1 < len(items):
            out.append(items[i + 1])
        elif arg.startswith("--set="):
            out.append(arg.split("=", 1)[1])
    return out


def run_launch(args: LaunchArgs) -> int:
    servers_cmds, learner, logs = plan_commands(args)
    servers: list[ServerProcess] = []
    learner_proc: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if learner_proc is not None and learner_proc.poll() is None:
            learner_proc.send_signal(signal.SIGINT)  # the learner checkpoints and exits 130
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i, cmd in enumerate(servers_cmds):
            print(f"coordexp.launch: {cmd.role}: {cmd.shell()}", flush=True)
            servers.append(ServerProcess(cmd, logs / f"server_{i}.log"))
        for server in servers:
            waited = server.wait_healthy(args.wait_timeout_s)
            print(f"coordexp.launch: {server.command.role} healthy at {server.command.base_url} after {waited:.0f} s "
                  f"(log {server.log_path})", flush=True)
        print(f"coordexp.launch: learner: {learner.shell()}", flush=True)
        learner_proc = subprocess.Popen(learner.argv, env=launch_env(os.environ, learner.env))
        return learner_proc.wait()
    except ServerStartError as exc:
        print(f"coordexp.launch: {exc}", file=sys.stderr)
        return EXIT_SERVER
    except KeyboardInterrupt:
        if learner_proc is not None:
            try:
                return learner_proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                learner_proc.kill()
        return 130
    finally:
        for server in servers:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, dry = parse_args(sys.argv[1:] if argv is None else argv)
        if dry:
            servers, learner, logs = plan_commands(args)
            for cmd in [*servers, learner]:
                print(f"# {cmd.role}" + (f" ({cmd.base_url}, log {logs})" if cmd.base_url else ""))
                print(cmd.shell())
            return 0
        return run_launch(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
