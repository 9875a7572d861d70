#!/usr/bin/python3
"""torchvision's standard ImageNet evaluation preprocessing, as the reference for resnet-serve's.

    /usr/bin/python3 test/python/torchvision_preprocess.py --out FILE IMAGE [IMAGE ...]

For each image: PIL.Image.open(path).convert('RGB'), then Resize(256), CenterCrop(224), ToTensor()
and Normalize(ImageNet mean, std), exactly as the torchvision.models documentation gives them.
Writes the tensors as raw little-endian float32, N×3×224×224 in argument order, to FILE
('-' for stdout). Needs Debian's python3-torch and python3-torchvision (1.13 / 0.14).
"""
import argparse
import sys

import torch
from PIL import Image
from torchvision import transforms

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help="output file, or '-' for stdout")
    parser.add_argument('--resize', type=int, default=256)
    parser.add_argument('--crop', type=int, default=224)
    parser.add_argument('images', nargs='+')
    args = parser.parse_args()

    # Resize's default interpolation is bilinear; on PIL images it is PIL's antialiased resize.
    preprocess = transforms.Compose([
        transforms.Resize(args.resize),
        transforms.CenterCrop(args.crop),
        transforms.ToTensor(),
        transforms.Normalize(mean=MEAN, std=STD),
    ])
    with torch.no_grad():
        batch = torch.stack([preprocess(Image.open(path).convert('RGB')) for path in args.images])
    data = batch.numpy().astype('<f4', copy=False).tobytes()
    if args.out == '-':
        sys.stdout.buffer.write(data)
    else:
        with open(args.out, 'wb') as f:
            f.write(data)
    print(f'{len(args.images)} images → {tuple(batch.shape)} float32', file=sys.stderr)


if __name__ == '__main__':
    main()
