"""The inference bundle: cleaning rules, fitted features and model as one checked artifact.

`package` builds models/bundle/ (`build.build_files`, `store.write_bundle`); serving and batch
scoring open it with `runtime.load_bundle`, which refuses a bundle whose files do not match
its manifest. The ONNX export (double precision: trees then split exactly as in sklearn) is the
fast path; the skops Pipeline is the reference it is checked against, on the validation split
and synthetic edge rows (the test split is read by `evaluate` alone).

One concern per module (import the module you need; this file holds no code, so importing
`runtime` does not import the build side):

- `store`: the files on disk, their manifest of sha256s, atomic writes, verification.
- `runtime`: `Bundle` and `load_bundle`, what batch scoring and the API import.
- `rows`: the contract's row checks and value coherence, shared by both serving paths.
- `expressions`: derived features and contract rules evaluated with numpy.
- `onnx_export`: the Pipeline in ONNX, double precision.
- `signature`: ONNX inputs, class labels, the fields the API accepts and an example.
- `reference`: reference statistics for drift checks.
- `lineage`: the data, params and code behind the bundle (dvc.lock, imported modules).
- `card`: the model card.
- `parity`: ONNX against sklearn, the record path against the frame path.
- `build`: every bundle file from the DAG's outputs.

Adding a file to the bundle is one change: its entry in the dict `build.build_files` returns.
The manifest then lists and hashes it, `load_bundle` verifies it like every other file, and
`Bundle.file(name)` returns its bytes (`store.BUNDLE_FILES` names only the files every bundle
must have, those `Bundle` reads when it opens).
"""
