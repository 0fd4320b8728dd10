"""Train the example digits classifier and export it in gpucap's model format.

Data: scikit-learn's bundled 8x8 digits data set (1797 images, pixel values 0-16), which ships inside
the scikit-learn package, so no download is needed.

Re-run from the repository root:

    .venv/bin/python examples/models/train_digits.py

It writes, next to this script:
  digits-mlp.safetensors   the model: input "pixels" FP32 [N, 64] raw pixels 0-16,
                           output "probabilities" FP32 [N, 10]
  digits-test.csv          the held-out test split: label, then 64 pixel values per line
  digits-report.json       the test accuracy the runtime must reproduce, and the training settings
"""

import json
import pathlib

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
HIDDEN = (64, 32)
HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    # Train on pixels scaled to [0, 1]; the scaling is folded into the first layer's weights below
    # so that the exported model takes the raw 0-16 pixels, exactly as the data set has them.
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", max_iter=600, random_state=SEED)
    clf.fit(x_train / 16.0, y_train)
    accuracy = float(clf.score(x_test / 16.0, y_test))

    weights = [w.astype(np.float32) for w in clf.coefs_]
    biases = [b.astype(np.float32) for b in clf.intercepts_]
    weights[0] = weights[0] / np.float32(16.0)
    names = ["hidden1", "hidden2", "output"]
    tensors = {}
    for name, w, b in zip(names, weights, biases):
        tensors[f"{name}.weight"] = np.ascontiguousarray(w)  # [in, out]
        tensors[f"{name}.bias"] = np.ascontiguousarray(b)
    metadata = {
        "gpucap.format": "gpucap-ffn",
        "gpucap.format_version": "1",
        "gpucap.layers": ",".join(names),
        "gpucap.activations": "relu,relu,softmax",
        "gpucap.input": "pixels",
        "gpucap.output": "probabilities",
        "gpucap.labels": json.dumps([str(c) for c in clf.classes_]),
        "gpucap.description": "8x8 digit classifier trained on scikit-learn's digits data set",
    }
    save_file(tensors, str(HERE / "digits-mlp.safetensors"), metadata=metadata)

    with open(HERE / "digits-test.csv", "w") as f:
        for label, row in zip(y_test, x_test):
            f.write(",".join([str(int(label))] + [str(int(v)) for v in row]) + "\n")

    report = {
        "test_accuracy": accuracy,
        "test_samples": int(len(y_test)),
        "test_correct": int(round(accuracy * len(y_test))),
        "hidden_layers": list(HIDDEN),
        "seed": SEED,
        "sklearn_version": __import__("sklearn").__version__,
    }
    (HERE / "digits-report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} held-out images")


if __name__ == "__main__":
    main()
