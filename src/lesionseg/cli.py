"""The `lesionseg` command: serve, predict, batch, evaluate, calibrate, info, train, export, quantise,
export-weights."""

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

from lesionseg import __version__
from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_THRESHOLD, DEFAULT_TTA, MIN_CAUGHT
from lesionseg.devices import DEVICE_HELP, check_device_name


def model_split(predictor):
    """The training/validation/test split the model was trained with, from its sidecar."""
    from lesionseg.data.splits import Split

    return Split.of_model(predictor.sidecar.training)


def add_model_and_data_arguments(parser) -> None:
    """--weights, --data-root and --sets, for the commands that run a model over the data."""
    from lesionseg.training.options import TrainingOptions

    defaults = TrainingOptions()
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    parser.add_argument("--data-root", type=Path, default=defaults.data_root)
    parser.add_argument("--sets", nargs="+", default=list(defaults.sets))


def add_device_argument(parser) -> None:
    parser.add_argument("--device", type=device_argument, help=DEVICE_HELP)


def add_train_parser(subparsers) -> None:
    from dataclasses import MISSING, fields

    from lesionseg.training.options import TrainingOptions

    parser = subparsers.add_parser("train", help="train a model on ISIC-layout folders (resumable)")
    # One flag per TrainingOptions field, its type, default and help taken from the field.
    for option in fields(TrainingOptions):
        if option.metadata.get("flag") is False:
            continue
        keywords = {key: value for key, value in option.metadata.items() if value is not None}
        default = option.default if option.default is not MISSING else option.default_factory()
        if option.type == tuple[str, ...]:
            keywords.update(nargs="+", default=list(default))
        elif option.type == tuple[Path, ...]:
            keywords.update(nargs="+", type=Path, default=list(default))
        else:
            # Path | None takes a path; the rest are plain int, float, str and Path.
            keywords.update(type=Path if option.type == Path | None else option.type, default=default)
        parser.add_argument("--" + option.name.replace("_", "-"), **keywords)
    # The name before 0.4.0, when the held-out pairs were all called validation.
    parser.add_argument("--validation-fraction", dest="held_out_fraction", type=float, help=argparse.SUPPRESS)


def run_train(arguments: argparse.Namespace) -> None:
    from dataclasses import fields

    from lesionseg.training.loop import train
    from lesionseg.training.options import TrainingOptions

    # The fields that are flags (add_train_parser's rule); `command` records how the run was started.
    flags = [option.name for option in fields(TrainingOptions) if option.metadata.get("flag") is not False]
    given = {name: getattr(arguments, name) for name in flags}
    given["sets"], given["teachers"] = tuple(given["sets"]), tuple(given["teachers"])
    best = train(TrainingOptions(**given, command=["lesionseg", *sys.argv[1:]]))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, every rank returns here; one says it
        print(f"best checkpoint: {best}")


BACKENDS = ["auto", "pytorch", "onnx", "onnx-int8", "openvino", "openvino-f32", "openvino-int8"]
BACKEND_HELP = "auto (the default): ONNX Runtime where the checkpoint's graphs were exported, else PyTorch"


def add_serve_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP service (settings also from LESIONSEG_* variables)")
    parser.add_argument("--host", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, help="default 8000")
    parser.add_argument("--weights", type=Path, help="a .safetensors checkpoint; default: the embedded model")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes, each with its own model; give each cores / workers threads"
    )
    parser.add_argument("--backend", choices=BACKENDS, help=f"{BACKEND_HELP} (or LESIONSEG_BACKEND)")
    add_device_argument(parser)


def run_serve(arguments: argparse.Namespace) -> None:
    import functools

    from lesionseg.config import Settings
    from lesionseg.predictor import check_backend_installed

    # Flags become environment settings, so that every worker process reads the same ones.
    for key in ("host", "port", "weights", "backend", "device"):
        if (value := getattr(arguments, key)) is not None:
            os.environ[f"LESIONSEG_{key.upper()}"] = str(value)
    # Checked before the server's own imports: a wrong setting is named, whatever else is missing.
    settings = Settings()
    check_backend_installed(settings.backend, settings.weights, settings.device)
    if settings.site_profile is not None:  # refused here in one line, not by each worker in a traceback
        from lesionseg.model.sidecar import read_sidecar
        from lesionseg.predictor import sidecar_and_gate

        sidecar_and_gate(settings.weights, read_sidecar(settings.weights), settings.site_profile)

    if settings.database_url:
        check_database_reachable(settings.database_url)

    import uvicorn

    from lesionseg.api.http_protocol import H11_BUFFER_MARGIN_BYTES, LimitedH11Protocol
    from lesionseg.api.observability import uvicorn_log_config

    config = uvicorn.Config(
        "lesionseg.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=arguments.workers,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,  # our own JSON access line carries the request id
        timeout_graceful_shutdown=30,
        http=functools.partial(
            LimitedH11Protocol,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_seconds=settings.header_timeout_seconds,
        ),
        h11_max_incomplete_event_size=settings.max_header_bytes + H11_BUFFER_MARGIN_BYTES,
    )
    sys.exit(serve_until_stopped(config))


def check_database_reachable(url: str) -> None:
    """One connection before any worker starts, so that a database that cannot be reached is one line naming
    the setting (password hidden), not a traceback in each worker. Migrating stays the workers' own work."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        engine = create_engine(url)
    except (ArgumentError, ValueError) as error:
        raise ValueError(f"LESIONSEG_DATABASE_URL is not a database URL SQLAlchemy reads: {error}") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        shown = engine.url.render_as_string(hide_password=True)
        raise ValueError(f"LESIONSEG_DATABASE_URL={shown}: cannot connect ({reason})") from None
    finally:
        engine.dispose()


def serve_until_stopped(config) -> int:
    """uvicorn.run's two ways to serve, with one difference: several workers whose start fails (a database
    that cannot be reached, a checkpoint that does not load) end the command with uvicorn's start-up failure
    code, 3, as one worker does. uvicorn.run returns normally then, so systemd's Restart=on-failure and CI
    read a failed start as a clean stop."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.server import Server
    from uvicorn.supervisors import Multiprocess

    try:
        if config.workers <= 1:
            server = Server(config)
            server.run()
            return 0 if server.started else STARTUP_FAILURE
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
    except KeyboardInterrupt:
        return 0
    # A worker that failed to start is kept in the list: the supervisor stops instead of replacing it.
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


def whole_number_from(lowest: int):
    """An argparse type: a whole number of `lowest` or more, refused in one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be a whole number of {lowest} or more, not {text!r}")
        return value

    return parse


def device_argument(text: str) -> str:
    try:
        return check_device_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="segment images or folders of images")
    parser.add_argument("images", nargs="+", type=Path, help="image files and/or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--format",
        choices=["all", "isic", "dicom"],
        default="all",
        help="all: ID_mask.png, ID_uncertainty.png (16-bit) and ID_combined.png; isic: ID_segmentation.png only; "
        "dicom (DICOM images only): ID_segmentation.dcm and ID_uncertainty.dcm, a Segmentation and a Parametric Map",
    )
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    add_prediction_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="report one JSON object per image instead of a table")


def add_prediction_arguments(parser) -> None:
    """A PredictionRequest's fields, for `predict` and `batch`; left out, the settings' defaults apply."""
    parser.add_argument("--samples", type=int, help=f"MC-dropout passes (default {DEFAULT_SAMPLES})")
    parser.add_argument("--threshold", type=float, help=f"mask = mean probability ≥ this (default {DEFAULT_THRESHOLD})")
    parser.add_argument(
        "--coverage", type=float, help="instead of --threshold: keep this expected fraction of lesion pixels (0.5–0.99)"
    )
    parser.add_argument("--seed", type=int, default=0, help="fixes the dropout masks (default 0)")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="sample each image flipped both ways too, pooled (default: on; --no-tta infers up to 2.6× as fast)",
    )


def add_served_tta_argument(parser) -> None:
    """`--tta/--no-tta` for the commands that measure or calibrate the served predictions: on, as served."""
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_TTA,
        help="sample each image flipped both ways too, pooled, as served (default: on)",
    )


def prediction_request(arguments: argparse.Namespace, settings=None):
    from lesionseg.config import Settings
    from lesionseg.segmenter import PredictionRequest

    return PredictionRequest.with_defaults(
        settings or Settings(),
        arguments.samples,
        arguments.seed,
        arguments.threshold,
        arguments.coverage,
        arguments.tta,
    )


def expand_image_paths(paths: list[Path]) -> list[Path]:
    from lesionseg.batch.inputs import image_paths_in

    expanded = []
    for path in paths:
        if path.is_dir():
            expanded += image_paths_in(path)
        else:
            expanded.append(path)
    return expanded


def run_predict(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from lesionseg.imaging.decode import ImageRejected
    from lesionseg.segmenter import load

    segmenter = load(arguments.weights, arguments.backend, device=arguments.device)
    request = prediction_request(arguments, segmenter.settings)
    arguments.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    image_paths = expand_image_paths(arguments.images)
    if not arguments.json:
        print(PREDICT_TABLE_HEADER)
    # The progress bar goes to stderr and only to a terminal: stdout carries the report, for a person or a pipe.
    for image_path in tqdm(image_paths, desc="segmenting", unit="image", disable=None, file=sys.stderr):
        try:
            result = segmenter.predict(image_path, request)
        except (ImageRejected, OSError) as error:
            tqdm.write(f"{image_path}: skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        if result.out_of_distribution:
            warning = f"{image_path}: does not look like dermoscopy (ood_score {result.ood_score:.2f})"
            tqdm.write(warning, file=sys.stderr)
        try:
            written = write_predict_outputs(result, image_path.stem, arguments.out, arguments.format)
        except ImageRejected as error:  # a DICOM answer asked of a picture file
            tqdm.write(f"{image_path}: skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        tqdm.write(predict_report(image_path, result, written, arguments.json))
    if failures:
        sys.exit(1)


PREDICT_TABLE_HEADER = (
    f"{'image':<32} {'lesion %':>8} {'uncertainty':>11} {'review':>6} {'not dermoscopy? (ood_score)':>27}  files"
)
# Per `--format`: each file's name after the image's, and the output rendered into it.
PREDICT_FILES = {
    "all": (("mask.png", "mask"), ("uncertainty.png", "uncertainty"), ("combined.png", "png")),
    "isic": (("segmentation.png", "mask"),),
    "dicom": (("segmentation.dcm", "dicom-seg"), ("uncertainty.dcm", "dicom-pmap")),
}


def write_predict_outputs(result, stem: str, folder: Path, layout: str) -> list[Path]:
    """The files `lesionseg predict` writes for one image, in the layout `--format` chose; each rendered before
    any is written, so a refused output (a DICOM answer of a picture file) writes none."""
    outputs = [(folder / f"{stem}_{name}", result.render(output)) for name, output in PREDICT_FILES[layout]]
    for path, data in outputs:
        path.write_bytes(data)
    return [path for path, _ in outputs]


def predict_report(image_path: Path, result, written: list[Path], as_json: bool) -> str:
    """One image's line: a table row, or (`--json`) one JSON object with the same facts and more. From the
    result's own fields: the full JSON summary would also encode the mask's RLE and outline, unused here."""
    mask = result.mask
    facts = {
        "image": str(image_path),
        "lesion_area_fraction": int(mask.sum()) / mask.size,
        "uncertainty_score": result.score,
        "review_recommended": result.review_recommended,
        "out_of_distribution": result.out_of_distribution,
        "ood_score": result.ood_score,
        "files": [str(path) for path in written],
    }
    if as_json:
        prediction = result.prediction
        extra = {"width": result.width, "height": result.height, "seed": prediction.seed}
        return json.dumps({**facts, **extra, "threshold": prediction.threshold})
    unknown = result.out_of_distribution is None
    gate = "unavailable" if unknown else f"{'yes' if result.out_of_distribution else 'no'} ({result.ood_score:.2f})"
    return (
        f"{image_path.name[:32]:<32} {100 * facts['lesion_area_fraction']:>8.1f} {facts['uncertainty_score']:>11.3f} "
        f"{'yes' if facts['review_recommended'] else 'no':>6} {gate:>27}  {' '.join(path.name for path in written)}"
    )


# Exit statuses of `lesionseg batch` for a scheduler: 2 (argparse's, and ours) means it could not start.
BATCH_SOME_FAILED = 3
BATCH_ALL_FAILED = 4


def add_batch_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="segment an archive (folder or manifest CSV) into masks, uncertainty maps and a results table",
        epilog="exit status: 0 every image ok, 3 some images failed, 4 every image failed, "
        "2 the job could not start (bad settings, no images, another job's folder)",
    )
    parser.add_argument("input", type=Path, help="a folder of images, or a CSV with a `path` column")
    parser.add_argument("output", type=Path, help="output folder; rerunning into it skips finished images")
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--address", help="ray: join this cluster (`auto` or host:port); default: start a local one")
    parser.add_argument("--workers", type=int, help="ray: model replicas; default: the cluster's CPUs / --threads")
    parser.add_argument("--threads", type=int, default=0, help="threads per worker; 0: all cores (local), 1 (ray)")
    parser.add_argument(
        "--in-flight",
        type=whole_number_from(1),
        help="local: images worked on at once (one in inference, the others read, decoded or encoded; those in "
        "inference together share its runs); default: 3 on the CPU, the CPU's cores on a GPU",
    )
    parser.add_argument(
        "--encoder-processes",
        type=whole_number_from(0),
        help="local: processes that encode the outputs (PNGs, overlays), spread over the cores; 0: the in-flight "
        "threads encode; default: the CPU's cores on a GPU, 0 on the CPU (where inference has the cores)",
    )
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    add_device_argument(parser)
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also overlays/ID_overlay.png: the photo with the outline and uncertainty",
    )
    add_prediction_arguments(parser)


def run_batch(arguments: argparse.Namespace) -> None:
    from lesionseg.batch.engines import IMAGES_IN_FLIGHT, run_batch
    from lesionseg.batch.inputs import list_inputs
    from lesionseg.batch.results import ResultsTable
    from lesionseg.batch.worker import JobSettings
    from lesionseg.config import Settings
    from lesionseg.devices import wants_cuda
    from lesionseg.predictor import check_backend_installed

    settings = Settings()
    weights = (arguments.weights or settings.weights).resolve()
    device = arguments.device or settings.device
    # Checked before any image is read; the job's record names the engine that ran, and where.
    backend = check_backend_installed(arguments.backend, weights, device)
    on_gpu = backend == "pytorch" and wants_cuda(device)
    job = JobSettings(
        weights=str(weights),
        backend=backend,
        request=prediction_request(arguments),
        threads=arguments.threads,
        device=("cuda" if device == "auto" else device) if on_gpu else "cpu",
        overlay=arguments.overlay,
    )
    items = list_inputs(arguments.input)
    if not items:
        # An empty or unmounted archive must not look like a finished job to a scheduler.
        raise ValueError(f"no images in {arguments.input}")
    # On a GPU, inference is quick and the reading, decoding and PNG encoding around it are the work: as many
    # images at once as there are cores keeps them all busy, and batches the GPU's runs.
    in_flight = arguments.in_flight or (os.cpu_count() or IMAGES_IN_FLIGHT if on_gpu else IMAGES_IN_FLIGHT)
    encoders = arguments.encoder_processes
    if encoders is None:
        encoders = (os.cpu_count() or 1) if on_gpu else 0
    table = ResultsTable(arguments.output, job)
    try:
        summary = run_batch(
            items, job, table, arguments.engine, arguments.address, arguments.workers, in_flight, encoders
        )
    finally:
        table.close()
    (arguments.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} images failed; their errors are in {arguments.output / 'results.csv'}")
        sys.exit(BATCH_ALL_FAILED if summary["ok"] == 0 and not summary["already_finished"] else BATCH_SOME_FAILED)


def add_evaluate_parser(subparsers) -> None:
    from lesionseg.data import SUBSETS

    parser = subparsers.add_parser("evaluate", help="ISIC 2018 Task 1 metrics at each image's own size")
    add_model_and_data_arguments(parser)
    add_device_argument(parser)
    parser.add_argument(
        "--split",
        choices=SUBSETS,
        default="test",
        help="of the split the model was trained with (its sidecar says which): test chose nothing",
    )
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pairs of each set")
    parser.add_argument("--uncertainty", action="store_true", help="also measure calibration and error detection")
    parser.add_argument("--output", type=Path, default=Path("runs/evaluation.json"))
    parser.add_argument("--plots", type=Path, help="folder for the reliability and risk-coverage PNGs")
    parser.add_argument("--record", action="store_true", help="also store the metrics in the checkpoint's sidecar")
    parser.add_argument(
        "--ood",
        type=Path,
        metavar="FOLDER",
        help="instead: the out-of-distribution gate against this evaluation set (tools/build_ood_set.py)",
    )
    parser.add_argument(
        "--coverage", action="store_true", help="instead: realised miss rate of coverage masks over repeated splits"
    )
    add_served_tta_argument(parser)
    parser.add_argument(
        "--shifts",
        action="store_true",
        help="instead: the shift test bed, each set under each camera-like shift (accuracy, uncertainty, the gate)",
    )
    parser.add_argument(
        "--gate-only",
        action="store_true",
        help="with --shifts: only the out-of-distribution gate, which needs only the trunk, so on the whole split",
    )
    parser.add_argument(
        "--proposals",
        action="store_true",
        help="instead: LiteMedSAM's box-prompted proposals against the model (a box around the truth, the"
        " model's own box, the two averaged) and their timings",
    )


def load_predictor(weights: Path | None, device: str | None = None):
    """The model these commands run, where serving would run it: LESIONSEG_BACKEND, and `device` (--device) or
    else LESIONSEG_DEVICE, so that `--device cpu` keeps an evaluation off a GPU that is busy training."""
    from lesionseg.config import Settings
    from lesionseg.predictor import Predictor

    settings = Settings()
    weights = weights or settings.weights
    # On the CPU, auto takes ONNX Runtime where the graphs were exported: about three times PyTorch's speed.
    predictor = Predictor.from_checkpoint(
        weights, settings.backend, device=device or settings.device, cuda_graphs=settings.cuda_graphs
    )
    return weights, predictor


def run_evaluate(arguments: argparse.Namespace) -> None:
    from lesionseg.data.splits import select_pairs
    from lesionseg.evaluation import evaluate

    if arguments.record and arguments.limit:
        raise ValueError("--record keeps the model's numbers in its sidecar: it refuses a partial run (--limit)")
    weights, predictor = load_predictor(arguments.weights, arguments.device)
    if arguments.ood:
        report = evaluate_out_of_distribution(arguments, predictor)
        return record_report(arguments, weights, "evaluation_out_of_distribution", report)
    if arguments.coverage:
        report = evaluate_coverage(arguments, predictor)
        return record_report(arguments, weights, "evaluation_coverage", report)
    if arguments.shifts:
        return evaluate_shifts(arguments, weights, predictor)
    records_by_set = {
        set_name: select_pairs(arguments.data_root, set_name, arguments.split, model_split(predictor))[
            : arguments.limit or None
        ]
        for set_name in arguments.sets
    }
    if arguments.proposals:
        return evaluate_proposals(arguments, weights, predictor, records_by_set)
    results, counts, per_image, uncertainty = evaluate.evaluate_sets(
        predictor, records_by_set, arguments.samples, arguments.seed, arguments.tta, arguments.uncertainty
    )
    print(evaluate.format_table(results, counts))
    summary = {
        "command": " ".join(["lesionseg", *sys.argv[1:]]),
        "model": predictor.config.name,
        "split": arguments.split,
        "samples": arguments.samples,
        "seed": arguments.seed,
        "tta": arguments.tta,
        "temperature": predictor.temperature,
        "pairs": counts,
        "metrics": results,
    }
    if uncertainty:
        print()
        print(evaluate.format_uncertainty_table(uncertainty))
        summary["uncertainty"] = {
            name: {key: report[key] for key in ("pixel", "image")} for name, report in uncertainty.items()
        }
    if arguments.plots and uncertainty:
        from lesionseg.evaluation.plots import plot_reliability, plot_risk_coverage

        arguments.plots.mkdir(parents=True, exist_ok=True)
        plot_reliability(uncertainty, arguments.plots / "reliability.png")
        plot_risk_coverage(uncertainty, arguments.plots / "risk_coverage.png")
        print(f"plots: {arguments.plots}/reliability.png, {arguments.plots}/risk_coverage.png")
    evaluate.write_report(arguments.output, {**summary, "per_image": per_image, "curves": uncertainty})
    print(f"report: {arguments.output}")
    if arguments.record:
        from lesionseg.model.sidecar import update_sidecar

        update_sidecar(weights, "evaluation_uncertainty" if arguments.uncertainty else "evaluation", summary)


def evaluate_shifts(arguments: argparse.Namespace, weights: Path, predictor) -> None:
    from lesionseg.data.splits import select_pairs
    from lesionseg.evaluation.shifts import evaluate_shift_bed, format_gate_table, format_shift_table, gate_shift_bed

    split = model_split(predictor)
    records_by_set = {}
    for set_name in arguments.sets:
        records = select_pairs(arguments.data_root, set_name, arguments.split, split)
        records_by_set[set_name] = records[: arguments.limit] if arguments.limit else records
    if arguments.gate_only:
        report = gate_shift_bed(predictor, records_by_set, arguments.data_root, split)
        print(format_gate_table(report))
        gate = predictor.sidecar.out_of_distribution.statistics_sha256
        summary = {"model": predictor.config.name, "split": arguments.split, "gate_statistics_sha256": gate}
        record_report(arguments, weights, "evaluation_gate_shifts", {**summary, **report})
        return
    report = evaluate_shift_bed(
        predictor, records_by_set, arguments.data_root, split, arguments.samples, arguments.seed, tta=arguments.tta
    )
    print(format_shift_table(report))
    summary = {"model": predictor.config.name, "split": arguments.split, "samples": arguments.samples}
    summary["tta"] = arguments.tta
    record_report(arguments, weights, "evaluation_shifts", {**summary, **report})


def evaluate_proposals(arguments: argparse.Namespace, weights: Path, predictor, records_by_set: dict) -> None:
    from lesionseg.evaluation.proposals import evaluate_proposals as evaluate
    from lesionseg.evaluation.proposals import format_proposal_table
    from lesionseg.proposals.litemedsam import BoxProposer

    proposer = BoxProposer()
    summaries, per_image = {}, {}
    for set_name, records in records_by_set.items():
        summaries[set_name], per_image[set_name] = evaluate(
            predictor, proposer, records, arguments.samples, arguments.seed, arguments.tta
        )
    print(format_proposal_table(summaries))
    about = ("name", "description", "parameters", "licence", "source", "training_data_note")
    summary = {"model": predictor.config.name, "proposer": {key: proposer.sidecar[key] for key in about}}
    summary |= {"split": arguments.split, "samples": arguments.samples, "tta": arguments.tta}
    record_report(arguments, weights, "evaluation_proposals", {**summary, "sets": summaries, "per_image": per_image})


def record_report(arguments: argparse.Namespace, weights: Path, key: str, report: dict) -> None:
    from lesionseg.evaluation.evaluate import write_report
    from lesionseg.model.sidecar import update_sidecar

    report = {"command": " ".join(["lesionseg", *sys.argv[1:]]), **report}
    write_report(arguments.output, report)
    print(f"report: {arguments.output}")
    if arguments.record:
        # The sidecar keeps the summary; the rows of every image stay in the report file.
        update_sidecar(weights, key, {name: value for name, value in report.items() if name != "per_image"})


def evaluate_out_of_distribution(arguments: argparse.Namespace, predictor) -> dict:
    from lesionseg.evaluation.out_of_distribution import evaluate_gate
    from lesionseg.model_card import detection_summaries, detection_table

    methods = evaluate_gate(
        predictor,
        model_split(predictor),
        arguments.data_root,
        arguments.sets,
        arguments.ood,
        arguments.samples,
        arguments.seed,
        arguments.tta,
        arguments.limit or None,
    )
    print("\n".join([*detection_table(methods), *detection_summaries(methods)]))
    return {"samples": arguments.samples, "seed": arguments.seed, "methods": methods}


def evaluate_coverage(arguments: argparse.Namespace, predictor) -> dict:
    from lesionseg.evaluation.coverage import evaluate_coverage_sets, format_coverage_tables

    limit = arguments.limit or None
    reports = evaluate_coverage_sets(
        predictor,
        model_split(predictor),
        arguments.data_root,
        arguments.sets,
        arguments.samples,
        arguments.seed,
        limit,
        arguments.tta,
    )
    print(format_coverage_tables(reports))
    return {"samples": arguments.samples, "seed": arguments.seed, "tta": arguments.tta, "sets": reports}


def add_calibrate_parser(subparsers) -> None:
    parser = subparsers.add_parser("calibrate", help="fit temperature and the review threshold on the validation split")
    add_model_and_data_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--referred-fraction", type=float, default=0.1, help="share of images to flag for review")
    add_served_tta_argument(parser)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N pairs of each set")


def run_calibrate(arguments: argparse.Namespace) -> None:
    from lesionseg.data.splits import select_pairs
    from lesionseg.evaluation.calibrate import calibrate
    from lesionseg.model.sidecar import update_sidecar

    weights, predictor = load_predictor(arguments.weights, arguments.device)
    records = []
    for set_name in arguments.sets:
        pairs = select_pairs(arguments.data_root, set_name, "validation", model_split(predictor))
        records += pairs[: arguments.limit] if arguments.limit else pairs
    calibration = calibrate(
        predictor, records, arguments.samples, arguments.seed, arguments.referred_fraction, arguments.tta
    )
    calibration["command"] = " ".join(["lesionseg", *sys.argv[1:]])
    update_sidecar(weights, "calibration", calibration)
    print(json.dumps(calibration, indent=2))


def add_calibrate_ood_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-ood",
        help="fit the out-of-distribution gate on training images; its threshold on held-out dermoscopy",
    )
    add_model_and_data_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--training-images", type=int, default=6000, help="a fixed sample of the training split")
    parser.add_argument(
        "--flagged-fraction",
        type=float,
        default=0.02,
        help="the most the gate may flag of any group of held-out dermoscopy (a set, or the validation pairs under "
        "one camera-like shift)",
    )
    parser.add_argument(
        "--shifted-pairs",
        type=int,
        default=0,
        help="validation pairs of each set under each shift of the test bed, a group per set and shift that sets the "
        "thresholds (0: the whole validation split)",
    )
    parser.add_argument(
        "--negatives",
        type=Path,
        help="non-dermoscopic training pictures (tools/build_ood_set.py DIR --training) to fit the gate's classifier; "
        "without it the gate is the distance alone",
    )


def run_calibrate_ood(arguments: argparse.Namespace) -> None:
    from lesionseg.evaluation.out_of_distribution import calibrate_gate
    from lesionseg.model.sidecar import file_sha256, update_sidecar

    weights, predictor = load_predictor(arguments.weights, arguments.device)
    gate, kept, record = calibrate_gate(
        predictor,
        model_split(predictor),
        arguments.data_root,
        arguments.sets,
        arguments.training_images,
        arguments.flagged_fraction,
        arguments.negatives,
        arguments.shifted_pairs,
    )
    statistics = Path(weights).with_suffix(".ood.npz")
    gate.save_statistics(statistics, kept)
    record = {
        **record,
        "statistics": statistics.name,
        "statistics_sha256": file_sha256(statistics),
        "command": " ".join(["lesionseg", *sys.argv[1:]]),
    }
    update_sidecar(weights, "out_of_distribution", record)
    print(json.dumps(record, indent=2))


def add_calibrate_site_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-site",
        help="a clinic's own gate, review and coverage thresholds, from its review export (a site profile)",
    )
    parser.add_argument("export", type=Path, help="a folder `lesionseg export-reviews` wrote (images/, masks/)")
    parser.add_argument("--output", type=Path, required=True, help="the site profile to write (JSON)")
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    add_device_argument(parser)
    parser.add_argument("--fit-cases", type=int, help="cases to fit on; the rest are held back (default: 70 %%)")
    parser.add_argument(
        "--flagged-fraction", type=float, default=0.02, help="the most the gate may flag of the site's cases"
    )
    parser.add_argument(
        "--min-caught",
        type=float,
        default=MIN_CAUGHT,
        help="the least share of the gate's own non-dermoscopic pictures it must still catch, each scored by a "
        "refit without it; where the flagged fraction's line catches fewer, the line comes down (default "
        f"{MIN_CAUGHT:g}; 0 turns this off)",
    )
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--negatives", type=Path, help="also report the gate on this non-dermoscopic set (tools/build_ood_set.py)"
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=0.1,
        help="coverage holds with probability at least 1 - delta over the site's cases (default 0.1)",
    )


def print_gate_note(profile: dict, flagged_fraction: float) -> None:
    """What the site's gate line promises, where it is not simply the flagged fraction asked for."""
    from lesionseg.evaluation.site import conformal_rank

    fitted, lines = profile["fitted_on"]["cases"], profile.get("gate", {})
    if lines.get("flags_at_most", 0.0) > flagged_fraction:
        print(
            f"note: the gate's line came down to catch {lines['non_dermoscopy_caught_cross_fitted']:.1%} of its own "
            f"non-dermoscopic pictures (--min-caught {lines['min_caught']:g}), so it may flag up to "
            f"{lines['flags_at_most']:.1%} of the site's next cases, more than --flagged-fraction "
            f"{flagged_fraction:g} asked: with {fitted} fitting cases, the line that keeps to it lets too many "
            "through; more reviewed cases bring the two closer"
        )
    elif conformal_rank(fitted, flagged_fraction) == fitted:  # the line is the highest score
        enough = next(count for count in itertools.count(fitted) if conformal_rank(count, flagged_fraction) < count)
        print(
            f"note: with {fitted} fitting cases, the gate's line must pass the highest of their scores, so one "
            f"unusual photo can set it and fewer non-dermoscopic pictures are caught; from {enough} cases (at "
            f"--flagged-fraction {flagged_fraction:g}) it need not"
        )


def run_calibrate_site(arguments: argparse.Namespace) -> None:
    from lesionseg.evaluation.site import calibrate_site, format_site_report
    from lesionseg.predictor import load_classifier_fitting
    from lesionseg.site_profile import PROFILE_FORMAT, profile_problem, write_site_profile

    weights, predictor = load_predictor(arguments.weights, arguments.device)
    profile, report = calibrate_site(
        predictor,
        arguments.export,
        arguments.fit_cases,
        arguments.flagged_fraction,
        arguments.samples,
        arguments.seed,
        arguments.negatives,
        arguments.delta,
        load_classifier_fitting(weights, predictor.sidecar),
        arguments.min_caught,
    )
    # Refused rather than written: a profile that switches a flag off is worse than none.
    problem = profile_problem({"format": PROFILE_FORMAT, **profile}, predictor.sidecar)
    if problem is not None:
        raise ValueError(
            f"{arguments.export}: these cases cannot support a site profile ({problem}); the export is too small "
            "or too uniform (tiny or empty masks): review more of the site's cases, then run it again"
        )
    write_site_profile(arguments.output, {**profile, "held_back": report})
    print(format_site_report(report))
    print_gate_note(profile, arguments.flagged_fraction)
    print(f"site profile: {arguments.output}; serve with LESIONSEG_SITE_PROFILE={arguments.output}")


def add_calibrate_coverage_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-coverage", help="conformal thresholds for coverage=0.50…0.99, on the validation split"
    )
    add_model_and_data_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    add_served_tta_argument(parser)


def run_calibrate_coverage(arguments: argparse.Namespace) -> None:
    from lesionseg.data.splits import select_pairs
    from lesionseg.evaluation.coverage import pair_curves
    from lesionseg.model.sidecar import update_sidecar
    from lesionseg.uncertainty.coverage import calibrated_thresholds

    weights, predictor = load_predictor(arguments.weights, arguments.device)
    curves = []
    for set_name in arguments.sets:
        records = select_pairs(arguments.data_root, set_name, "validation", model_split(predictor))
        curves.append(pair_curves(predictor, records, arguments.samples, arguments.seed, set_name, arguments.tta)[0])
    record = {
        "method": "conformal risk control of the fraction of lesion pixels missed (Angelopoulos et al., 2022), "
        "per source; each coverage takes the lowest source's threshold",
        "thresholds": calibrated_thresholds(curves),
        "fitted_on": {
            "pairs": sum(len(missed) for missed in curves),
            "pairs_by_set": dict(zip(arguments.sets, [len(missed) for missed in curves], strict=True)),
            "samples": arguments.samples,
            "tta": arguments.tta,
        },
        "assumes": "the new image is exchangeable with the calibration images (same sources and devices)",
        "command": " ".join(["lesionseg", *sys.argv[1:]]),
    }
    update_sidecar(weights, "coverage", record)
    print(json.dumps({key: value for key, value in record.items() if key != "thresholds"}, indent=2))
    print({coverage: record["thresholds"][coverage] for coverage in ("0.80", "0.90", "0.95")})


def add_info_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="print the model card of a checkpoint")
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    add_device_argument(parser)
    parser.add_argument("--markdown", action="store_true", help="print MODEL_CARD.md instead of JSON")


def run_info(arguments: argparse.Namespace) -> None:
    from lesionseg.model_card import render_model_card

    _, predictor = load_predictor(arguments.weights, arguments.device)
    if arguments.markdown:
        print(render_model_card(predictor.sidecar), end="")
    else:
        print(json.dumps({**predictor.identity, "card": predictor.model_card}, indent=2))


def add_export_weights_parser(subparsers) -> None:
    parser = subparsers.add_parser("export-weights", help="copy a checkpoint, optionally in float16 (to ship it)")
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--half", action="store_true", help="store floating-point tensors as float16")


def run_export_weights(arguments: argparse.Namespace) -> None:
    from lesionseg.model.checkpoint import config_from_sidecar, load_checkpoint, save_checkpoint

    model, sidecar = load_checkpoint(arguments.source)
    metadata = {key: sidecar.entry(key) for key in ("training", "validation_during_training") if sidecar.entry(key)}
    save_checkpoint(model, config_from_sidecar(sidecar), arguments.destination, metadata, half_precision=arguments.half)
    print(f"wrote {arguments.destination}")


def add_export_onnx_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        # Its old name: beside export-weights and export-reviews it said less about what it writes.
        aliases=["export"],
        help="export a checkpoint to ONNX (trunk and tail) for --backend onnx",
    )
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    parser.set_defaults(command="export-onnx")


def run_export_onnx(arguments: argparse.Namespace) -> None:
    from lesionseg.config import Settings
    from lesionseg.model.export import export_onnx

    record = export_onnx(arguments.weights or Settings().weights)
    print(json.dumps(record, indent=2))


def add_quantise_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantise", help="write a static int8 ONNX trunk, calibrated on training images, for --backend onnx-int8"
    )
    add_model_and_data_arguments(parser)
    parser.add_argument("--images-per-set", type=int, default=80, help="training images drawn from each set")
    parser.add_argument("--seed", type=int, default=0, help="which training images are drawn")


def run_quantise(arguments: argparse.Namespace) -> None:
    from lesionseg.backends.quantise import quantise_trunk
    from lesionseg.config import Settings

    weights = arguments.weights or Settings().weights
    record = quantise_trunk(weights, arguments.data_root, arguments.sets, arguments.images_per_set, arguments.seed)
    print(json.dumps(record, indent=2))


def add_import_seed_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-seed", help="convert the seed's Swin-T UPerNet checkpoint (.pth) into a servable .safetensors"
    )
    parser.add_argument("source", type=Path, help="the seed's checkpoint, e.g. best_swin_upernet_main.pth")
    parser.add_argument("output", type=Path, help="where to write OUTPUT.safetensors and OUTPUT.json")


def run_import_seed(arguments: argparse.Namespace) -> None:
    from lesionseg.model.seed_import import import_seed

    output = arguments.output.with_suffix(".safetensors")
    sidecar = import_seed(arguments.source, output)
    print(json.dumps({"weights": str(output), "sha256": sidecar.sha256, **sidecar.entry("provenance")}, indent=2))
    print(f"serve it: lesionseg serve --backend pytorch --weights {output}  (lesionseg export-onnx adds ONNX)")


# What the lean install (ONNX Runtime only) leaves out: training, export and the PyTorch backend need them.
TRAINING_MODULES = {"torch", "torchvision", "timm", "safetensors", "onnx", "onnxscript", "matplotlib", "sklearn"}
# What to install for each optional module, for the message when it is missing.
INSTALL_HINTS = {
    **dict.fromkeys(
        TRAINING_MODULES, "pip install 'lesionseg[train]' (or 'lesionseg[torch]' to serve with --backend pytorch)"
    ),
    "openvino": "pip install 'lesionseg[openvino]'",
    "ray": "pip install 'lesionseg[ray]'",
    "psycopg": "pip install 'lesionseg[postgres]'",
}
# In a checkout (`make serve`'s lean environment), the Makefile's target that installs each instead.
CHECKOUT_HINTS = {
    **dict.fromkeys(TRAINING_MODULES, "make install (the full environment, .venv) in this checkout"),
    "ray": "make install-ray in this checkout",
}


def add_export_reviews_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-reviews", help="accepted and corrected cases of the review worklist, as a training set"
    )
    parser.add_argument("output", type=Path, help="folder to write: images/, masks/, manifest.csv")
    parser.add_argument("--database-url", help="the service's LESIONSEG_DATABASE_URL (the default)")
    parser.add_argument("--storage-dir", type=Path, help="the service's LESIONSEG_STORAGE_DIR (the default)")
    parser.add_argument("--replace", action="store_true", help="swap a non-empty OUTPUT for the new export, whole")
    parser.add_argument(
        "--include-out-of-distribution",
        action="store_true",
        help="also cases the gate flagged that no reviewer confirmed as dermoscopy (verdicts from before confirmations "
        "were recorded; confirmed ones are always in)",
    )


def run_export_reviews(arguments: argparse.Namespace) -> None:
    from lesionseg.config import Settings
    from lesionseg.reviews.cases import CaseStore
    from lesionseg.reviews.export import export_reviews

    settings = Settings()
    database_url = arguments.database_url or settings.database_url
    if not database_url:
        raise ValueError("no database: give --database-url or set LESIONSEG_DATABASE_URL")
    store = CaseStore.open(database_url, arguments.storage_dir or settings.storage_dir, settings.retention_days)
    try:
        summary = export_reviews(
            store, arguments.output, settings, arguments.replace, arguments.include_out_of_distribution
        )
    finally:
        store.close()
    for case_id, reason in summary.skipped:
        print(f"skipped case {case_id}: {reason}", file=sys.stderr)
    if summary.left_out_of_distribution:
        print(
            f"left out {summary.left_out_of_distribution} cases flagged not dermoscopy that no reviewer confirmed "
            "(--include-out-of-distribution keeps them)"
        )
    print(f"{summary.written} reviewed cases written to {arguments.output}")
    print(f"train on them: lesionseg train --data-root {arguments.output.parent} --sets {arguments.output.name}")


def add_add_cases_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "add-cases", help="a folder of pictures into a running service's review worklist (POST /cases each)"
    )
    parser.add_argument("input", type=Path, help="a folder of images, or a CSV with a `path` column")
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000 (key: LESIONSEG_API_KEY)")
    add_prediction_arguments(parser)


def run_add_cases(arguments: argparse.Namespace) -> None:
    from lesionseg.batch.inputs import list_inputs
    from lesionseg.batch.to_worklist import WorklistClient, add_to_worklist
    from lesionseg.config import Settings

    items = list_inputs(arguments.input)
    if not items:
        raise ValueError(f"no images in {arguments.input}")
    # A reviewer's key, from the environment: never on the command line, where `ps` and shell history show it.
    client = WorklistClient(arguments.url, os.environ.get("LESIONSEG_API_KEY"))
    query = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name in ("samples", "threshold", "coverage", "seed", "tta")
        if (value := getattr(arguments, name)) is not None
    }
    summary = add_to_worklist(items, client, query, Settings().max_upload_bytes)
    for identifier, reason in summary.failed:
        print(f"not added {identifier}: {reason}", file=sys.stderr)
    print(
        f"{summary.added} added to the worklist at {arguments.url}, {summary.already_there} already there, "
        f"{len(summary.failed)} failed"
    )
    if summary.failed:
        sys.exit(1)


def add_dicomweb_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "dicomweb",
        help="segment a PACS's new dermoscopy pictures, storing a Segmentation and a Parametric Map of each back",
        epilog="credentials: LESIONSEG_DICOMWEB_USERNAME and LESIONSEG_DICOMWEB_PASSWORD, or LESIONSEG_DICOMWEB_TOKEN; "
        "the worklist's key: LESIONSEG_API_KEY. exit status with --once: 0 every new picture done, 3 some refused or "
        "failed, 4 every new picture refused or failed; 2 the worker could not start or had to stop (bad settings, "
        "the server unreachable or refusing the credentials, the state file in use by another worker)",
    )
    parser.add_argument("--url", required=True, help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    parser.add_argument(
        "--state",
        type=Path,
        default=Path("lesionseg-dicomweb.sqlite3"),
        help="the file recording each picture done or refused, so that it is handled once (default: %(default)s)",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one pass, then exit (for cron and tests)")
    when.add_argument("--interval", type=float, default=60.0, help="seconds between passes (default 60)")
    parser.add_argument(
        "--worklist-url", help="also add the pictures flagged for review to this service's worklist (POST /cases)"
    )
    parser.add_argument("--weights", type=Path, help="default: the embedded model")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    add_device_argument(parser)
    add_prediction_arguments(parser)


def run_dicomweb(arguments: argparse.Namespace) -> None:
    from dataclasses import asdict

    from lesionseg.batch.dicomweb import (
        HandledInstances,
        PacsWorker,
        check_reachable,
        dicomweb_client,
        passes,
        stop_on_signals,
    )
    from lesionseg.batch.to_worklist import WorklistClient
    from lesionseg.config import Settings
    from lesionseg.predictor import check_backend_installed
    from lesionseg.segmenter import load

    if arguments.interval <= 0:
        raise ValueError(f"--interval must be more than 0 seconds, not {arguments.interval}")
    settings = Settings()
    weights = (arguments.weights or settings.weights).resolve()
    device = arguments.device or settings.device
    backend = check_backend_installed(arguments.backend, weights, device)
    request = prediction_request(arguments, settings)
    client = dicomweb_client(arguments.url, settings)
    # The worklist's key, like the PACS's credentials, from the environment: never on the command line.
    api_key = os.environ.get("LESIONSEG_API_KEY")
    worklist = WorklistClient(arguments.worklist_url, api_key) if arguments.worklist_url else None
    state = HandledInstances(arguments.state, arguments.url)
    try:
        check_reachable(client)
        worker = PacsWorker(client, load(weights, backend, settings=settings, device=device), request, state, worklist)
        stopping = stop_on_signals()
        if not arguments.once:
            for summary in passes(worker, arguments.interval, stopping):
                if summary.already_handled < summary.pictures:  # a quiet pass says nothing
                    print(json.dumps(asdict(summary)), flush=True)
            return
        summary = worker.run_pass(stopping)
    finally:
        state.close()
    print(json.dumps(asdict(summary)))
    unfinished = summary.refused + summary.failed
    if unfinished:
        print(f"refused: {summary.refused} (recorded in {arguments.state}), failed: {summary.failed} (tried next pass)")
        sys.exit(BATCH_ALL_FAILED if summary.done == 0 else BATCH_SOME_FAILED)


COMMANDS = {
    "serve": (add_serve_parser, run_serve),
    "predict": (add_predict_parser, run_predict),
    "batch": (add_batch_parser, run_batch),
    "evaluate": (add_evaluate_parser, run_evaluate),
    "calibrate": (add_calibrate_parser, run_calibrate),
    "calibrate-ood": (add_calibrate_ood_parser, run_calibrate_ood),
    "calibrate-coverage": (add_calibrate_coverage_parser, run_calibrate_coverage),
    "calibrate-site": (add_calibrate_site_parser, run_calibrate_site),
    "info": (add_info_parser, run_info),
    "train": (add_train_parser, run_train),
    "export-weights": (add_export_weights_parser, run_export_weights),
    "export-onnx": (add_export_onnx_parser, run_export_onnx),
    "quantise": (add_quantise_parser, run_quantise),
    "import-seed": (add_import_seed_parser, run_import_seed),
    "export-reviews": (add_export_reviews_parser, run_export_reviews),
    "add-cases": (add_add_cases_parser, run_add_cases),
    "dicomweb": (add_dicomweb_parser, run_dicomweb),
}


def build_parser() -> argparse.ArgumentParser:
    """Every command's arguments. Building it imports nothing heavy (no NumPy, OpenCV, pydantic or torch):
    `lesionseg --help` answers at once, and each command imports what it needs when it runs."""
    parser = argparse.ArgumentParser(prog="lesionseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    from lesionseg.model.sidecar import CheckpointError

    try:
        COMMANDS[arguments.command][1](arguments)
    except ModuleNotFoundError as error:
        hint = INSTALL_HINTS.get((error.name or "").partition(".")[0])
        if hint is None:
            raise
        if running_from_checkout():
            hint = CHECKOUT_HINTS.get((error.name or "").partition(".")[0], hint)
        parser.exit(2, f"lesionseg {arguments.command}: needs {error.name}, which this install does not have: {hint}\n")
    except (ValueError, CheckpointError, OSError) as error:
        parser.exit(2, f"lesionseg {arguments.command}: error: {error_message(error)}\n")


def running_from_checkout() -> bool:
    """Whether this lesionseg is a checkout's editable install (`make serve`), where `make install` is what
    adds the missing parts, not a pip extra."""
    return (Path(__file__).resolve().parents[2] / "Makefile").is_file()


def error_message(error: Exception) -> str:
    """Our words for an error; a setting that fails its check is named as the variable a user sets."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError) and error.title == "Settings":
        return "; ".join(setting_problem(problem) for problem in error.errors())
    return str(error)


def setting_problem(problem: dict) -> str:
    if not problem["loc"]:  # a check of several settings together, in its own words
        return problem["msg"].removeprefix("Value error, ")
    name = "LESIONSEG_" + "_".join(map(str, problem["loc"])).upper()
    return f"{name}: {problem['msg'].lower()} (it is {problem['input']!r})"


if __name__ == "__main__":
    main()
