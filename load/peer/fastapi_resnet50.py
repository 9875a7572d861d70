#!/usr/bin/python3
"""What a Python user would serve ResNet-50 with, for resnet-serve's side-by-side benchmark (load/peer.ts).

    /usr/bin/python3 load/peer/fastapi_resnet50.py --port PORT --labels LABELS.txt [--threads N]

FastAPI + uvicorn (one process, as `uvicorn app:app` starts), POST /classify with the JPEG as the
body, PIL + torchvision's standard transforms, torchvision's ResNet-50 with random weights (the
same architecture as resnet-serve's synthetic model), top-5 labels with probabilities as JSON.
The model runs in Starlette's thread pool (what FastAPI does with a plain `def` endpoint), so
requests overlap while PyTorch runs outside the GIL. Nothing is batched. Benchmark only, not CI.
"""
import argparse
import io
import json

import torch
import torchvision
import uvicorn
from fastapi import FastAPI, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from torchvision import transforms

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--port', type=int, required=True)
parser.add_argument('--labels', required=True)
parser.add_argument('--threads', type=int, default=0, help="torch.set_num_threads; 0 keeps PyTorch's default")
args = parser.parse_args()

if args.threads > 0:
    torch.set_num_threads(args.threads)
with open(args.labels, encoding='utf-8') as f:
    labels = [line.rstrip('\n') for line in f]

torch.manual_seed(0)
model = torchvision.models.resnet50()
model.eval()
preprocess = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])
with torch.no_grad():
    model(torch.zeros(1, 3, 224, 224))


def classify_bytes(data: bytes) -> list:
    image = Image.open(io.BytesIO(data)).convert('RGB')
    with torch.no_grad():
        probabilities = torch.softmax(model(preprocess(image).unsqueeze(0))[0], dim=0)
    top = torch.topk(probabilities, 5)
    return [{'label': labels[i], 'index': int(i), 'probability': float(p)} for p, i in zip(top.values, top.indices)]


app = FastAPI()


@app.get('/health')
def health() -> dict:
    return {'threads': torch.get_num_threads()}


@app.post('/classify')
async def classify(request: Request) -> Response:
    data = await request.body()
    predictions = await run_in_threadpool(classify_bytes, data)
    return Response(json.dumps({'predictions': predictions}), media_type='application/json')


if __name__ == '__main__':
    uvicorn.run(app, host='127.0.0.1', port=args.port, log_level='warning')
