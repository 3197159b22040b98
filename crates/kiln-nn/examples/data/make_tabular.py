"""Writes scikit-learn's bundled digits and diabetes data sets as CSV, split once into
train and test parts, and prints scikit-learn's MLP scores on that split: the reference
for kiln's tabular example and `kiln train mlp --csv`.

Run once to regenerate (the CSVs are committed; tests and examples only read them):
    pip install scikit-learn
    python3 crates/kiln-nn/examples/data/make_tabular.py [--scores-only]
"""

import argparse
import csv
import os
import statistics
import warnings

from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = range(5)


def write(name, header, x, y):
    with open(os.path.join(HERE, name), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row, target in zip(x, y):
            w.writerow([f"{v:.6g}" for v in row] + [f"{target:g}"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scores-only", action="store_true")
    args = parser.parse_args()

    digits = load_digits()
    dx_train, dx_test, dy_train, dy_test = train_test_split(
        digits.data, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    diabetes = load_diabetes()
    rx_train, rx_test, ry_train, ry_test = train_test_split(
        diabetes.data, diabetes.target, test_size=0.2, random_state=0
    )
    if not args.scores_only:
        pixels = [f"pixel_{i}" for i in range(64)]
        write("digits_train.csv", pixels + ["digit"], dx_train, dy_train)
        write("digits_test.csv", pixels + ["digit"], dx_test, dy_test)
        names = list(diabetes.feature_names)
        write("diabetes_train.csv", names + ["progression"], rx_train, ry_train)
        write("diabetes_test.csv", names + ["progression"], rx_test, ry_test)

    # Two settings each: scikit-learn's defaults (up to 200 epochs, stopping on the
    # training loss), and kiln's (early stopping on a 10% validation part; for the
    # regressor the target standardised too, as `kiln train mlp --csv --task regress`
    # does). The features are standardised in both, as kiln does.
    warnings.simplefilter("ignore", ConvergenceWarning)
    settings = {
        "defaults": dict(),
        "kiln's early stopping": dict(early_stopping=True, n_iter_no_change=10),
    }
    for label, extra in settings.items():
        accuracies, r2s = [], []
        for seed in SEEDS:
            clf = make_pipeline(StandardScaler(), MLPClassifier(random_state=seed, **extra))
            clf.fit(dx_train, dy_train)
            accuracies.append(accuracy_score(dy_test, clf.predict(dx_test)))
            reg = make_pipeline(StandardScaler(), MLPRegressor(random_state=seed, **extra))
            if extra:
                reg = TransformedTargetRegressor(regressor=reg, transformer=StandardScaler())
            reg.fit(rx_train, ry_train)
            r2s.append(r2_score(ry_test, reg.predict(rx_test)))
        for name, scores in [("digits accuracy", accuracies), ("diabetes R^2", r2s)]:
            print(
                f"scikit-learn MLP ({label}), {name} over seeds {list(SEEDS)}: "
                f"median {statistics.median(scores):.4f}, min {min(scores):.4f}, max {max(scores):.4f}"
            )


if __name__ == "__main__":
    main()
