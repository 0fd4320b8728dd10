"""Write a benchmark model big enough that compute, not HTTP, dominates serving time.

The default is 1024 -> 4096 -> 4096 -> 1024 (about 25 M parameters, 100 MB of FP32, 50 MFLOP per row).
The weights are random (He initialisation, fixed seed): the benchmark measures speed, not accuracy.
The file is large and reproducible, so it is not committed; `scripts/bench-runtime.sh` makes it.

    .venv/bin/python examples/bench/make_bench_model.py [OUT] [--widths 1024,4096,4096,1024]
"""

import argparse
import pathlib

import numpy as np
from safetensors.numpy import save_file

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(HERE / "bench-ffn.safetensors"))
    parser.add_argument("--widths", default="1024,4096,4096,1024", help="layer widths, input first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    widths = [int(w) for w in args.widths.split(",")]
    if len(widths) < 2 or min(widths) < 1:
        parser.error("--widths needs at least two positive widths")
    rng = np.random.default_rng(args.seed)
    tensors, names = {}, []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        name = f"dense{i}"
        names.append(name)
        scale = np.sqrt(2.0 / n_in)
        tensors[f"{name}.weight"] = (rng.standard_normal((n_in, n_out)) * scale).astype(np.float32)
        tensors[f"{name}.bias"] = np.zeros(n_out, np.float32)
    activations = ["relu"] * (len(names) - 1) + ["identity"]
    save_file(
        tensors,
        args.out,
        metadata={
            "gpucap.format": "gpucap-ffn",
            "gpucap.format_version": "1",
            "gpucap.layers": ",".join(names),
            "gpucap.activations": ",".join(activations),
            "gpucap.input": "x",
            "gpucap.output": "y",
            "gpucap.description": f"benchmark FFN {args.widths}, random weights (seed {args.seed})",
        },
    )
    params = sum(t.size for t in tensors.values())
    print(f"wrote {args.out}: widths {widths}, {params / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
