"""collect: read the source named in params and write an immutable raw snapshot, the lines
that could not be read as rows (with file, line and reason), and a manifest."""

from lifecycle import cli, io, params, sources


def main() -> str:
    args = cli.paths(__doc__, snapshot="raw snapshot (Parquet)",
                     rejected="lines rejected, with their reason (Parquet)",
                     manifest="manifest (JSON)")
    p = params.load("collect")
    source = sources.pin(p.source, args.manifest)  # a stream: the range of events, fixed
    got = sources.read_source(source)
    frame = sources.snapshot_frame(got.frame)
    io.write_parquet(frame, args.snapshot)
    io.write_parquet(got.rejected, args.rejected)
    digest = io.sha256_file(args.snapshot)
    io.write_json(sources.manifest(source, got, frame, digest), args.manifest)
    sources.check_rejected(got, p.max_rejected_share)
    events = frame.attrs.get("rejected_events")
    rejected = (f"; {len(got.rejected)} line(s) rejected -> {args.rejected}"
                if len(got.rejected) else "")
    return (f"{len(frame)} rows x {frame.shape[1]} columns from {p.source.kind} "
            f"-> {args.snapshot} (sha256 {digest[:12]}){rejected}"
            + (f"; {len(events)} events held no record (reasons in {args.manifest})"
               if events else ""))


if __name__ == "__main__":
    cli.run("collect", main)
