"""Recipes: one module per command, each a config dataclass and a function that runs it.

    finetune          FinetuneConfig, finetune()
    distill           DistillConfig, distill()             task distillation, teacher-logit cache
    distill_general   DistillGeneralConfig, distill_general()
    prune             PruneConfig, prune()
    quantize          QuantizeConfig, quantize()
    export            ExportConfig, export()
    evaluate          EvaluateConfig, evaluate(); PredictConfig, predict()
    vocab             VocabConfig, train_vocab()
    report            ReportConfig, report()
    bench             BenchConfig, bench()

`common` is the skeleton they share: where the data comes from (DataConfig), --resume, the seed,
encoding, scoring and OUT/results.json. Policy lives here, next to the code that uses it (a
student's default loss mix and learning rate, default epochs, which teacher a report measures),
so a Python caller gets the defaults the CLI does. A recipe that trains takes a TrainConfig;
`train_defaults(config)` gives the values it uses where the caller sets none.
"""
