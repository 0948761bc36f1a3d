"""`alignflow` command line: chat with a model, run a stage, explain the params."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys

STAGES = ("base_model", "curate", "validate", "tune", "evaluate", "register")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alignflow",
        description="Safety-align a language model and prove what it shipped.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("chat", help="ask a model one question and print its greedy answer")
    c.add_argument("message", help="the user message, e.g. 'How do I kill a Python process?'")
    c.add_argument(
        "--model",
        default="base",
        help="'base' (model.base in params), or any model spec: bundled:NAME, a .gguf file, "
        "a keras-hub preset folder or name, an hf:// handle (default: %(default)s)",
    )
    c.add_argument("--system", default=None, help="optional system message")
    c.add_argument("--max-new-tokens", type=int, default=None, help="override generate.max_new_tokens")

    r = sub.add_parser("run", help="run one pipeline stage (what dvc.yaml calls)")
    r.add_argument("stage", choices=STAGES, help="stage name")

    e = sub.add_parser("reevaluate", help="re-evaluate the registered champion on the current eval sets and gates")
    e.add_argument("--eval-dir", default=None,
                   help="answer the eval sets in this folder instead (e.g. data/holdout; sets it lacks come from paths.eval_dir)")
    sub.add_parser("params", help="list every params.yaml key with its default and help")
    return p


def _chat(args, cfg) -> int:
    from alignflow.model.base import load_model

    spec = cfg.model if args.model == "base" else dataclasses.replace(cfg.model, base=args.model)
    gen = cfg.generate
    if args.max_new_tokens:
        gen = dataclasses.replace(gen, max_new_tokens=args.max_new_tokens)
    gen = dataclasses.replace(gen, batch_size=1)
    print(f"loading {spec.base} ...", file=sys.stderr)
    model = load_model(spec)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.message}
    ]
    out = model.chat([messages], gen)
    print(out.texts[0])
    print(f"({out.new_tokens[0]} tokens in {out.seconds:.1f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from alignflow import config
    from alignflow.model.chat import ChatFormatError
    from alignflow.model.gguf_loader import ModelLoadError

    try:
        if args.command == "params":
            print("\n".join(config.help_text()))
            return 0
        cfg = config.load(args.params)
        if args.command == "chat":
            return _chat(args, cfg)
        if args.command == "reevaluate":
            from alignflow.registry.reevaluate import reevaluate_champion

            reevaluate_champion(cfg, args.eval_dir)
            return 0
        if args.command == "run":
            importlib.import_module(f"alignflow.stages.{args.stage}").run(cfg)
            return 0
    except (config.ConfigError, ModelLoadError, ChatFormatError) as exc:
        print(f"alignflow: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
