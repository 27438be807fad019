"""The command layer: one small module per `cifarbench` command (and DVC stage), each `configure(parser)`
(its arguments), `run(args)` (load what it needs, call the library, print) and, for a stage, `main(argv)`
(what stages/*.py call). cli.py lists them; the library below never parses arguments nor loads params.yaml.

This package is the only importer of cifarbench.params, which puts together the sections owned by the
library's modules (tests/test_dvc_deps.py checks it). Each module imports the library inside `run`, so
`cifarbench <command> --help` and a stage script start without torch, and an import stopped by Ctrl-C
ends as cleanly as the work (cifarbench.errors.run_as_command). This file imports nothing: the data stages'
code dependencies stay the data modules.

    params_args.py  --params and --preset, and loading params.yaml under them (commands of the whole params)
    data.py         `cifarbench data`; the `download` and `prepare` stages (params.yaml `data:` only)
    tune.py         `cifarbench tune`; the `tune` stage
    train.py        `cifarbench train`; the `train` stage
    report.py       `cifarbench report`; the `report` stage
    nightly.py      `cifarbench nightly`
    calibrate.py    `cifarbench calibrate`
    doctor.py       `cifarbench doctor`
    models.py       `cifarbench models`
"""
