"""Train the reference U-Net (hayashimasa/UNet-PyTorch) on ISBI 2012 in PyTorch, with what the
reference left out: the paper's exact border weights and a label-safe augmentation, from unet_rs.

    pip install ./crates/unet-py torch tifffile
    python crates/unet-py/examples/torch_dataset.py --data data/isbi2012 [--epochs 50]

The reference's recipe: sections 0-26 train, 27-29 validate; sections normalised with mean
0.495 and std 0.173 and mirror-padded by 30 to 572 x 572; the valid-padding U-Net of the paper
with batch norm predicts the central 388 x 388; Adam, lr 5e-4, batch 3, 50 epochs; the best
checkpoint by IoU. Here the loss is weighted by w(x) of the paper (w0 10, sigma 5), computed
exactly for every augmented label, and the reference augmentation moves image, label and
weights together, so labels stay binary.
"""

import argparse
import pathlib

import numpy as np
import tifffile

import unet_rs

MEAN, STD = 0.495, 0.173  # the reference's normalisation (grey values in [0, 1])
PAD = 30  # 512 + 2 * 30 = 572 in
OUT = 388  # the central 388 x 388 out
TRAIN, VALID = range(0, 27), range(27, 30)


def load_isbi(data_dir):
    """The training stacks: images uint8 and labels uint8 (0 membrane, 255 cell), (30, 512, 512)."""
    d = pathlib.Path(data_dir)
    return tifffile.imread(d / "train-volume.tif"), tifffile.imread(d / "train-labels.tif")


def to_net_input(image01):
    """Normalise a [0, 1] section and mirror-pad it to the net's input size."""
    return np.pad((image01 - MEAN) / STD, PAD, mode="symmetric").astype(np.float32)


def centre(a):
    """The central OUT x OUT of a 512 x 512 map: the pixels the net predicts."""
    top = (a.shape[-2] - OUT) // 2
    left = (a.shape[-1] - OUT) // 2
    return a[..., top : top + OUT, left : left + OUT]


try:
    from torch.utils.data import Dataset
except ImportError:  # the array helpers and the dataset's items need no torch
    Dataset = object


class ISBIDataset(Dataset):
    """ISBI sections with the reference augmentation and exact border weights.

    Items are numpy arrays (the DataLoader's default collate makes tensors of them): image
    float32 (1, 572, 572), label int64 (388, 388) (1 cell, 0 membrane), weight float32
    (388, 388). Item i of epoch e is augmented with index e * len(self) + i: the same whatever
    the number of DataLoader workers (each holds a copy of this object, so a counter kept in
    the Augmenter would repeat across workers), new draws every epoch (`set_epoch`).
    """

    def __init__(self, images, labels, sections, augment=True, seed=0):
        self.images, self.labels = images, labels
        self.sections = list(sections)
        self.augment, self.seed = augment, seed
        self.epoch = 0
        self._augmenter = None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.sections)

    def __getstate__(self):
        # Workers started by "spawn" get a pickled copy: the Augmenter is made again there.
        state = dict(self.__dict__)
        state["_augmenter"] = None
        return state

    def __getitem__(self, i):
        image, label = self.images[self.sections[i]], self.labels[self.sections[i]]
        if self.augment:
            if self._augmenter is None:
                self._augmenter = unet_rs.Augmenter("reference", seed=self.seed)
            image, label = self._augmenter.sample(self.epoch * len(self) + i, image, label)
        else:
            image = image / np.float32(255.0)
        # w(x) of the label the net sees (after the deformation), as the paper defines it.
        weight = unet_rs.weight_map(label, w0=10.0, sigma=5.0)
        return (
            to_net_input(image)[None],
            centre(label > 0).astype(np.int64),
            np.ascontiguousarray(centre(weight)),
        )


def unet(in_channels=1, n_classes=2, widths=(64, 128, 256, 512, 1024)):
    """The paper's valid-padding U-Net (572 -> 388) with batch norm after each convolution."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [in_channels, *widths]
            self.down = nn.ModuleList(block(a, b) for a, b in zip(chans[:-1], chans[1:]))
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:])
            )
            self.merge = nn.ModuleList(block(2 * a, a) for a in widths[:-1])
            self.head = nn.Conv2d(widths[0], n_classes, 1)

        def forward(self, x):
            skips = []
            for i, down in enumerate(self.down):
                x = down(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for up, merge in zip(reversed(self.up), reversed(self.merge)):
                x = up(x)
                skip = skips.pop()
                dy, dx = (skip.shape[-2] - x.shape[-2]) // 2, (skip.shape[-1] - x.shape[-1]) // 2
                skip = skip[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
                x = merge(torch.cat([skip, x], dim=1))
            return self.head(x)

    return UNet()


def main():
    import torch
    import torch.nn.functional as F

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/isbi2012")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="unet-reference.pt")
    args = parser.parse_args()

    images, labels = load_isbi(args.data)
    train = ISBIDataset(images, labels, TRAIN, augment=True)
    loader = torch.utils.data.DataLoader(train, batch_size=3, shuffle=True, num_workers=args.workers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = unet().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4)
    valid_in = torch.stack([torch.from_numpy(to_net_input(images[s] / 255.0))[None] for s in VALID])
    best = -1.0
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        for image, label, weight in loader:
            image, label, weight = image.to(device), label.to(device), weight.to(device)
            loss = (F.cross_entropy(model(image), label, reduction="none") * weight).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            prob = torch.softmax(model(valid_in.to(device)), dim=1)[:, 1].cpu().numpy()
        s = unet_rs.scores(prob, centre(labels[list(VALID)]))
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f}, accuracy {s['pixel_accuracy']:.4f}, "
            f"IoU {s['iou']:.4f}, V-Rand {s['v_rand']:.4f}, V-Info {s['v_info']:.4f}"
        )
        if s["iou"] > best:
            best = s["iou"]
            torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
