"""train: fit the model family named in params on the train feature table (after the optional
search) and score it on train and validation with the task's primary metric. With
`train.mode: incremental` the champion's model (`train.champion`) continues on the train rows
instead (featurize made them with the champion's featurizer). With `train.mode: online` the
shadow learner's checkpoint (`train.online`) becomes the model: converted to scikit-learn and
checked to give its probabilities (lifecycle/feedback/online.py)."""

from lifecycle import cli, features, io, metrics, models, params, persistence
from lifecycle.feedback import incremental
from lifecycle.scale import training


def main() -> str:
    args = cli.paths(__doc__, train="train feature table", validation="validation feature table",
                     model="fitted model (skops)", metrics="training metrics (JSON)")
    task = params.load("task")
    metric = metrics.require(task.type, params.load("evaluate").primary_metric)
    p = params.load("train", model=models.TrainParams)
    if p.search.metric is not None:
        metric = metrics.require(task.type, p.search.metric, "train.search.metric")
    scale_p = training.load()   # all rows here, a seeded sample, or xgboost on the cluster
    X_val, y_val = features.read_table(args.validation)
    if p.mode == "incremental":
        champion = incremental.champion(p.champion, task.type, params.load("featurize").derived,
                                        p.model)
        X, y = features.read_table(args.train)
        model, report = incremental.continue_champion(champion, p, X, y, X_val, y_val, task.type,
                                                      metric)
    elif p.mode == "online":
        X, y = features.read_table(args.train)
        model, report = online_model(p, task.type, X, y, X_val, y_val, metric)
    elif scale_p.method == "xgboost_dask":
        model, report = training.fit_on_cluster(task.type, p, args.train, X_val, y_val, metric,
                                                scale_p)
    else:
        X, y = features.read_table(args.train) if scale_p.method == "all" else \
            features.split_target(training.sample_table(args.train, scale_p.rows, scale_p.seed))
        model, report = models.train(task.type, p, X, y, X_val, y_val, metric)
        report["training_rows"] = training.statement(
            scale_p.method, len(X), training.parquet_rows(args.train), scale_p)
    seconds = report.pop("fit_seconds")  # logged, not a metric: reruns must match
    persistence.save(model, args.model)
    io.write_json(report, args.metrics)
    metric = report["metric"]
    if p.mode == "online":
        o = report["online"]
        return (f"the online learner ({o['events']} feedback events after {o['warm']['rows']} "
                f"warm rows, over champion {o['champion']}'s features) as {report['estimator']}: "
                f"equal probabilities on {o['parity']['rows']} rows (max difference "
                f"{o['parity']['max_difference']:.1e}); {metric} validation "
                f"{report['validation'][metric]:.4f}")
    if p.mode == "incremental":
        return (f"champion {report['incremental']['champion']} continued on "
                f"{report['rows']['train']} new rows: {metric} train {report['train'][metric]:.4f} "
                f"validation {report['validation'][metric]:.4f} (champion's validation "
                f"{report['incremental']['champion_validation']:.4f}; {seconds:.2f} s)")
    searched = (f", searched {report['search']['candidates']} points by {p.search.method}"
                if report["search"] else "")
    return (f"{p.model} on {report['rows']['train']} rows x {report['features']} features"
            f"{searched} ({report['training_rows']['method']}): {metric} "
            f"train {report['train'][metric]:.4f} validation {report['validation'][metric]:.4f} "
            f"(fit {seconds:.2f} s)")


def online_model(p, task: str, X, y, X_val, y_val, metric: str):
    """`train.mode: online`: the shadow learner's checkpoint (`train.online`), converted to the
    scikit-learn model it equals, checked on these rows; nothing is fitted here."""
    from lifecycle.errors import StageError
    from lifecycle.feedback import online

    if task != "binary" or p.model != "logistic_regression":
        raise StageError(f"train.mode online: the online learner is a binary logistic "
                         f"regression; task.type is {task}, train.model is {p.model}")
    champion = incremental.champion(p.champion, task, params.load("featurize").derived,
                                    continues=False)
    model, facts = online.packaged_estimator(p.online, champion, X, X_val)
    return model, {
        "task": task, "model": p.model, "estimator": type(model).__name__, "metric": metric,
        "mode": "online", "online": facts,
        "train": {metric: round(models.score(model, X, y, task, metric), 6)},
        "validation": {metric: round(models.score(model, X_val, y_val, task, metric), 6)},
        "rows": {"train": len(X), "validation": len(X_val)}, "features": X.shape[1],
        "fit_seconds": 0.0}


if __name__ == "__main__":
    cli.run("train", main)
