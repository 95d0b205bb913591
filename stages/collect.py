"""collect: read the source named in params and write an immutable raw snapshot + manifest."""

from lifecycle import cli, io, params, sources


def main() -> str:
    args = cli.paths(__doc__, snapshot="raw snapshot (Parquet)", manifest="manifest (JSON)")
    p = params.load("collect")
    frame = sources.snapshot_frame(sources.read_source(p.source))
    io.write_parquet(frame, args.snapshot)
    digest = io.sha256_file(args.snapshot)
    io.write_json(sources.manifest(p.source, frame, digest), args.manifest)
    return (f"{len(frame)} rows x {frame.shape[1]} columns from {p.source.kind} "
            f"-> {args.snapshot} (sha256 {digest[:12]})")


if __name__ == "__main__":
    cli.run("collect", main)
