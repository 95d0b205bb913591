"""collect: read the source named in params and write an immutable raw snapshot, the lines
that could not be read as rows (with file, line and reason), and a manifest."""

from lifecycle import cli, io, params, scale, sources
from lifecycle.errors import StageError


def main() -> str:
    args = cli.paths(__doc__, snapshot="raw snapshot (Parquet)",
                     rejected="lines rejected, with their reason (Parquet)",
                     manifest="manifest (JSON)")
    p = params.load("collect")
    if (engine := scale.load()).kind == "dask":   # the same outputs, on a cluster
        if p.train_on != "original":
            raise StageError("collect.train_on: production rows are read by the pandas engine "
                             "only (set engine: pandas for a retrain)")
        from lifecycle.scale import collect as run
        return run.collect(args, p, engine)
    source = sources.pin(p.source, args.manifest)  # a stream: the range of events, fixed
    got, production = sources.write_training_snapshot(p, source, args.snapshot)
    io.write_parquet(got.rejected, args.rejected)
    digest = io.sha256_file(args.snapshot)
    manifest = sources.manifest(source, got, args.snapshot, digest)
    if production:
        manifest.update(train_on=p.train_on, production=production)
    io.write_json(manifest, args.manifest)
    sources.check_rejected(got, p.max_rejected_share)
    rejected = (f"; {len(got.rejected)} line(s) rejected -> {args.rejected}"
                if len(got.rejected) else "")
    origin = p.source.kind if not production else (
        f"{p.train_on} ({production['rows']} production rows)")
    return (f"{manifest['rows']} rows x {len(manifest['columns'])} columns from "
            f"{origin} -> {args.snapshot} (sha256 {digest[:12]}){rejected}"
            + (f"; {len(got.events)} events held no record (reasons in {args.manifest})"
               if got.events else ""))


if __name__ == "__main__":
    cli.run("collect", main)
