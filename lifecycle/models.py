"""Model families, each built from its own params section, and the fit that shows progress."""

from __future__ import annotations

from lifecycle.params import TrainParams


def build_model(task: str, p: TrainParams):
    """The unfitted estimator named by `train.model`, with its hyperparameters and seed."""
    classify = task != "regression"
    weight = p.class_weight if classify and p.class_weight != "none" else None
    family = p.model
    hp = getattr(p, family).model_dump()
    if family == "logistic_regression":
        if classify:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(class_weight=weight, random_state=p.seed, **hp)
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1 / hp["C"], random_state=p.seed)
    if family == "decision_tree":
        from sklearn import tree

        cls = tree.DecisionTreeClassifier if classify else tree.DecisionTreeRegressor
        return cls(random_state=p.seed, **({"class_weight": weight} if classify else {}), **hp)
    if family == "random_forest":
        from sklearn import ensemble

        cls = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
        return cls(random_state=p.seed, **({"class_weight": weight} if classify else {}), **hp)
    if family == "gradient_boosting":
        from sklearn import ensemble

        cls = (ensemble.HistGradientBoostingClassifier if classify
               else ensemble.HistGradientBoostingRegressor)
        return cls(random_state=p.seed, **({"class_weight": weight} if classify else {}), **hp)
    from sklearn import neural_network

    cls = neural_network.MLPClassifier if classify else neural_network.MLPRegressor
    return cls(random_state=p.seed, **hp)
