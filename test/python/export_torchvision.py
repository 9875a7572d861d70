"""Reference answers for the torchvision parity test: seeded torchvision ResNets exported to ONNX,
and the logits PyTorch itself computes for a given input tensor.

Run with Debian's interpreter (/usr/bin/python3 with python3-torch 1.13 and python3-torchvision 0.14):

    /usr/bin/python3 test/python/export_torchvision.py 50 101 152 --out-dir DIR \
        [--seed 0] [--input-name input] [--output-name logits] [--fixed-batch] \
        [--inputs tensor.f32 --count N]

For each depth it writes DIR/resnet{depth}.onnx and, with --inputs, DIR/resnet{depth}.logits.f32:
the float32 little-endian [N, 1000] logits of the N×3×224×224 float32 little-endian tensor read
from --inputs. The weights are torchvision's own initialisation after torch.manual_seed(seed), so
they are random (not trained) but the same on every run.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torchvision

CROP = 224
DEPTHS = (18, 34, 50, 101, 152)


def build(depth: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    # torchvision 0.14: `weights=None` (not the removed `pretrained=`) gives the untrained network.
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return model.eval()


def export(model: torch.nn.Module, path: str, input_name: str, output_name: str, fixed_batch: bool) -> None:
    example = torch.zeros(1, 3, CROP, CROP)
    dynamic_axes = None if fixed_batch else {input_name: {0: "N"}, output_name: {0: "N"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            path,
            opset_version=17,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("depths", nargs="+", type=int, choices=DEPTHS)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-name", default="input")
    parser.add_argument("--output-name", default="logits")
    parser.add_argument("--fixed-batch", action="store_true", help="export a batch of exactly 1 (as the ONNX Model Zoo v1-7 files)")
    parser.add_argument("--inputs", help="N×3×224×224 float32 little-endian tensor to compute reference logits for")
    parser.add_argument("--count", type=int, help="N, the number of images in --inputs")
    args = parser.parse_args()

    # The test machines have 2 shared cores; more threads than that only adds contention.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    os.makedirs(args.out_dir, exist_ok=True)

    inputs = None
    if args.inputs is not None:
        if args.count is None:
            parser.error("--inputs needs --count")
        data = np.fromfile(args.inputs, dtype="<f4")
        expected = args.count * 3 * CROP * CROP
        if data.size != expected:
            parser.error(f"{args.inputs} holds {data.size} floats; {args.count} images need {expected}")
        inputs = torch.from_numpy(data.reshape(args.count, 3, CROP, CROP).copy())

    for depth in args.depths:
        model = build(depth, args.seed)
        export(model, os.path.join(args.out_dir, f"resnet{depth}.onnx"), args.input_name, args.output_name, args.fixed_batch)
        if inputs is not None:
            with torch.no_grad():
                logits = model(inputs).numpy().astype("<f4")
            logits.tofile(os.path.join(args.out_dir, f"resnet{depth}.logits.f32"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
