"""seed_demo_source (demo only): write the embedded CRM database that `collect` reads."""

from lifecycle import cli, demo, params


def main() -> str:
    args = cli.paths(__doc__, output="the SQLite file to write")
    p = params.load("seed_demo_source")
    table = demo.crm_table(demo.telco_churn(), p.rows, p.snapshot_date, p.seed)
    demo.write_sqlite(table, args.output)
    return f"{len(table)} customers -> {args.output} (table {demo.TABLE})"


if __name__ == "__main__":
    cli.run("seed_demo_source", main)
