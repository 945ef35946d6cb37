"""Compile the Triton kernels that bench/gpu.py launches for an NVIDIA GPU, on a machine without one,
and report each configuration's registers, spills and shared memory.

    python bench/sm90_compile.py              # bench/gpu.py's GPU shapes, sm_90 (H100 / H200)
    python bench/sm90_compile.py --smoke      # its smoke shapes (what tests/ checks)
    python bench/sm90_compile.py --arch 80    # another target (80: A100)
    python bench/sm90_compile.py --only pc    # rows whose "name shape" contains the text
    python bench/sm90_compile.py --compile-python /tmp/venv36/bin/python   # another Triton:

(the last: a venv made with ``python -m venv --system-site-packages`` plus ``pip install --no-deps
triton==3.6.0``, the GPU machine's release; recording still uses this Python's Triton.)

Why: the interpreter that CI runs the kernels under executes their Python, not their
compilation, so a kernel can pass every CPU test and still fail to compile for a GPU (an
unsupported op, a layout the backend rejects) or spill registers there. Triton's wheel bundles
``ptxas``, so both can be checked here.

1. Recording (this process, ``TRITON_INTERPRET=1``): each row's Triton call of bench/gpu.py runs
   on CPU tensors with every kernel launch recorded and skipped (``--exec`` runs them). Recorded:
   the kernel, each argument's type (pointer dtype, i32 / i64, fp32), the constexpr values,
   ``num_warps`` / ``num_stages``, and the JIT's specialisation (16-byte-aligned pointers and
   multiples of 16 marked divisible, integer arguments equal to 1 made constants). With launches
   skipped the host code reads uninitialised buffers afterwards; a row that then raises keeps the
   launches it recorded and is listed as such.
2. Compiling (a subprocess, interpreter off): every distinct configuration through
   ``triton.compile`` for ``GPUTarget("cuda", arch, 32)``; ``cuobjdump --dump-resource-usage``
   gives registers per thread, the spill stack and local memory; the metadata the shared memory;
   ``cuobjdump --dump-sass`` the instruction mix (static counts of the opcodes in ``MIX``). A
   tensor-core kernel whose SASS shows ``HMMA`` but no ``HGMMA`` runs on the pre-Hopper
   ``mma.sync`` path, not ``wgmma``; an fp32 (``ieee``) product is ``FFMA``, and its ratio to
   the shared-memory loads (``LDS``) feeding it hints at whether it is bound by shared memory.

Coverage: the paths a CPU tensor takes. The GPU-only choices of ``reservoir_run`` (persistent
kernel with one program per SM, the register-resident W slice, ``sync="ll"``) are added as
explicit extra configurations (``EXTRA``, N2000 B1; with the smoke shapes too). pc_relax's CUDA-graph capture
changes no kernel.

Exit status 1 if any configuration fails to compile. Numbers are the compiler's, not timings.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))

# GPU-only launches at the GPU shapes (kernel, constexprs, argument types, num_warps): the
# persistent reservoir kernels as CUDA picks them at N2000 B1 (125 programs, one unit block each).
EXTRA = [
    ("bpalts.kernels.reservoir_run", "_persistent_kernel",
     dict(KEEP=0, BATCH=1, BLOCK_N=16, BLOCK_K=512, K_TILES=4, RESIDENT=True, K_PAD=2048),
     dict(W="*fp32", U="*fp32", leak="*fp32", buf="*fp32", out="*fp32", slots="*i32",
          counter="*i32"), 8, 3, "reservoir_run resident N2000 B1"),
    ("bpalts.kernels.reservoir_run", "_ll_resident_kernel",
     dict(KEEP=0, BLOCK_N=16, K_PAD=2048),
     dict(W="*fp32", U="*fp32", leak="*fp32", buf="*i64", out="*fp32", slots="*i32",
          status="*i32"), 8, 3, "reservoir_run sync=ll N2000 B1"),
]

# Opcodes counted in the SASS (static counts, loops not unrolled by the count): tensor-core
# products (wgmma, mma.sync), fp32 FMAs, shared-memory loads (plain, ldmatrix), async copies
# global -> shared (cp.async, TMA).
MIX = ("HGMMA", "HMMA", "FFMA", "LDS", "LDSM", "LDGSTS", "UTMALDG")

_DTYPES = {"float32": "fp32", "float64": "fp64", "int32": "i32", "int64": "i64", "bool": "i1",
           "uint8": "u8", "int8": "i8", "float16": "fp16", "bfloat16": "bf16"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="bench/gpu.py's smoke shapes")
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90)")
    p.add_argument("--only", metavar="TEXT", default=None)
    p.add_argument("--exec", action="store_true", help="run the recorded launches (interpreter)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results")
    p.add_argument("--compile-python", metavar="PYTHON", default=sys.executable,
                   help="the Python that compiles (default: this one), e.g. a venv with the GPU "
                        "machine's Triton release")
    p.add_argument("--compile-configs", metavar="PATH", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ 1. recording

def _describe(value):
    """(type string for the signature, divisible by 16, the value if it is a constant)."""
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[str(value.dtype).replace("torch.", "")], value.data_ptr() % 16 == 0, None
    if isinstance(value, bool):
        return "i1", False, None
    if isinstance(value, int):
        if value == 1:
            return "constexpr", False, 1
        return ("i32" if -2**31 <= value < 2**31 else "i64"), value % 16 == 0, None
    if isinstance(value, float):
        return "fp32", False, None
    if value is None:
        return "constexpr", False, None
    raise TypeError(f"unsupported kernel argument {type(value).__name__}")


def record(smoke: bool, only: str | None, execute: bool):
    """Run bench/gpu.py's rows on CPU tensors; return (configs, row reports)."""
    sys.argv = [sys.argv[0], "--smoke"]  # bench/gpu.py parses argv at import: interpreter mode
    sys.path.insert(0, HERE)
    import torch
    from triton.runtime.interpreter import InterpretedFunction

    gpu = importlib.import_module("gpu")
    configs: dict[str, dict] = {}
    original_run = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        names = self.arg_names
        launch = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound = dict(zip(names, args))
        bound.update(kwargs)
        params = inspect.signature(self.fn).parameters
        sig, const, div = {}, {}, []
        for i, name in enumerate(names):
            if name not in bound:
                continue  # a defaulted parameter: left to the kernel's default
            value = bound[name]
            if "constexpr" in str(params[name].annotation):
                const[name] = value
                sig[name] = "constexpr"
                continue
            t, d, c = _describe(value)
            sig[name] = t
            if t == "constexpr":
                const[name] = c
            elif d:
                div.append(i)
        conf = dict(module=self.fn.__module__, kernel=self.fn.__name__, signature=sig, constexprs=const,
                    divisible=div, num_warps=launch.get("num_warps", 4),
                    num_stages=launch.get("num_stages", 3), row=current[0])
        key = json.dumps({k: v for k, v in conf.items() if k != "row"}, sort_keys=True, default=str)
        configs.setdefault(key, conf)
        if execute:
            kwargs.update(launch)
            return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)
        return None

    InterpretedFunction.run = run
    current = [""]
    rows = []
    try:
        for op in gpu.build_ops(smoke):
            label = f"{op.name} {op.shape}"
            if only and only not in label:
                continue
            current[0] = label
            before = len(configs)
            gen = torch.Generator().manual_seed(0)
            err = None
            try:
                op.triton(*op.make_inputs(torch.device("cpu"), gen, gpu.LR_TIME))
            except Exception as exc:  # after a skipped launch the host may read garbage
                err = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            rows.append(dict(row=label, new_configs=len(configs) - before, error=err))
    finally:
        InterpretedFunction.run = original_run
    out = list(configs.values())
    for module, kernel, const, types, warps, stages, label in EXTRA:  # whatever the row shapes
        if only and only not in label:
            continue
        out.append(dict(module=module, kernel=kernel, signature=types, constexprs=const,
                        divisible=[], num_warps=warps, num_stages=stages, row=label))
    return out, rows


# ------------------------------------------------------------------------------ 2. compiling

def compile_all(configs, arch: int):
    """Compile every configuration (interpreter off); one result dict each."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    results = []
    for conf in configs:
        res = dict(conf)
        try:
            fn = getattr(importlib.import_module(conf["module"]), conf["kernel"])
            const = dict(conf["constexprs"])
            sig = {}
            for n, p in zip(fn.arg_names, fn.params):
                if n in const or p.is_constexpr:
                    sig[n] = "constexpr"
                    if n not in const:  # left to its default by the launch
                        const[n] = p.default
                else:
                    sig[n] = conf["signature"].get(n, "i32")  # EXTRA lists only non-i32 types
            attrs = {(i,): [["tt.divisibility", 16]] for i in conf["divisible"]}
            src = ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs)
            c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                               options=dict(num_warps=conf["num_warps"], num_stages=conf["num_stages"]))
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(c.asm["cubin"])
                f.flush()
                # one listing: the resource usage line ("REG:...") and the SASS
                dump = subprocess.run([os.path.join(tools, "cuobjdump"), "--dump-resource-usage",
                                       "--dump-sass", f.name], capture_output=True, text=True,
                                      check=True).stdout
            res["mix"] = _mix(dump)
            line = next(ln for ln in dump.splitlines() if "REG:" in ln)
            fields = dict(tok.split(":") for tok in line.split() if ":" in tok)
            res.update(ok=True, regs=int(fields["REG"]), stack=int(fields["STACK"]),
                       local=int(fields["LOCAL"]), shared=int(getattr(c.metadata, "shared", 0)))
        except Exception as exc:
            res.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
                       if str(exc).strip() else type(exc).__name__)
            res["trace"] = traceback.format_exc()[-2000:]
        results.append(res)
    return results


def _mix(sass: str) -> dict:
    """Static counts of the MIX opcodes in a ``cuobjdump --dump-sass`` listing."""
    counts = dict.fromkeys(MIX, 0)
    for line in sass.splitlines():
        # "        /*0120*/                   FFMA R4, R2, R3, R4 ;  /* 0x... */" (maybe "@P0 " first)
        code = line.split("*/", 1)[1].strip() if line.lstrip().startswith("/*") and "*/" in line else ""
        words = code.split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if words:
            op = words[0].split(".")[0]
            if op in counts:
                counts[op] += 1
    return counts


def _mix_text(mix: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in mix.items() if v) or "-"


def _short(const: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in const.items())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_configs:  # phase 2, in the subprocess
        with open(args.compile_configs) as f:
            configs = json.load(f)
        import triton

        json.dump(dict(results=compile_all(configs, args.arch), triton=triton.__version__), sys.stdout)
        return 0
    os.environ["TRITON_INTERPRET"] = "1"
    configs, rows = record(args.smoke, args.only, args.exec)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "configs.json")
        with open(path, "w") as f:
            json.dump(configs, f, default=str)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
        proc = subprocess.run([args.compile_python, os.path.abspath(__file__), "--compile-configs",
                               path, "--arch", str(args.arch)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(proc.stdout)
    results, version = out["results"], out["triton"]
    print(f"sm_{args.arch}, Triton {version}: {len(results)} kernel configurations from {len(rows)} "
          f"rows ({'smoke' if args.smoke else 'GPU'} shapes)\n")
    print(f"{'kernel':26s} {'warps':>5s} {'stages':>6s} {'regs':>4s} {'spill B':>7s} {'shared B':>8s}  "
          "constexprs (first row that launched it)  [SASS: static opcode counts]")
    failed = 0
    for r in results:
        if r["ok"]:
            spill = r["stack"] + r["local"]
            print(f"{r['kernel']:26s} {r['num_warps']:5d} {r['num_stages']:6d} {r['regs']:4d} "
                  f"{spill:7d} {r['shared']:8d}  {_short(r['constexprs'])} ({r['row']})  "
                  f"[{_mix_text(r.get('mix', {}))}]")
        else:
            failed += 1
            print(f"{r['kernel']:26s} FAILED: {r['error']}  {_short(r['constexprs'])} ({r['row']})")
    for row in rows:
        if row["error"] and not args.exec:
            print(f"note: {row['row']}: raised after {row['new_configs']} recorded launches "
                  f"(launches skipped: the host read uninitialised buffers): {row['error']}")
        elif row["error"]:
            print(f"note: {row['row']}: {row['error']}")
    if failed:
        print(f"\n{failed} configuration(s) failed to compile:")
        for r in results:
            if not r["ok"]:
                print(f"--- {r['kernel']} ({r['row']})\n{r['trace']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(arch=args.arch, triton=version, results=results, rows=rows), f, indent=1,
                      default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
