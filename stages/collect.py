"""collect: read the source named in params and write an immutable raw snapshot + manifest."""

from lifecycle import cli, io, params, sources


def main() -> str:
    args = cli.paths(__doc__, snapshot="raw snapshot (Parquet)", manifest="manifest (JSON)")
    p = params.load("collect")
    source = sources.pin(p.source, args.manifest)  # a stream: the range of events, fixed
    frame = sources.snapshot_frame(sources.read_source(source))
    io.write_parquet(frame, args.snapshot)
    digest = io.sha256_file(args.snapshot)
    io.write_json(sources.manifest(source, frame, digest), args.manifest)
    rejected = frame.attrs.get("rejected_events")
    return (f"{len(frame)} rows x {frame.shape[1]} columns from {p.source.kind} "
            f"-> {args.snapshot} (sha256 {digest[:12]})"
            + (f"; {len(rejected)} events held no record (reasons in {args.manifest})"
               if rejected else ""))


if __name__ == "__main__":
    cli.run("collect", main)
