"""The table `make bench` prints (bench/run.py measures, this formats): one row per
scenario, MediTrack beside its reference, the ratio, and the target where there is one."""


def print_table(results: dict, audit_baseline: str) -> None:
    embedded, rows = results["sqlite"], []

    def measured_on(store):
        """What a row measured: the store, or for MongoDB the server that stood in for it."""
        return results[store].get("server", store)

    def versus(name, key, target=None, store="sqlite", slowest=False):
        row = results[store][key]
        detail = f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms" + (f", max {row['max']:.0f} ms" if slowest else "")
        rows.append((f"{name} [{measured_on(store)}]", f"{row['rps']:,.0f}/s", f"{row['ceiling_rps']:,.0f}/s",
                     f"{row['ratio']:.2f}", detail, target or ""))

    versus("GET /health", "health")
    versus("GET /patients/{id}", "get_patient", "≥ 0.50, p99 ≤ 25 ms")
    versus("GET /patients?limit=20", "list_patients", "≥ 0.50")
    for connections, row in embedded["cpu_per_request"].items():
        rows.append((f"CPU per GET /patients/{{id}}, {connections} connection{'s' * (connections != '1')}",
                     f"{row['api']['cpu_us']:.0f} µs", f"{row['ceiling']['cpu_us']:.0f} µs",
                     f"{row['api']['cpu_us'] / row['ceiling']['cpu_us']:.1f}",
                     f"user + system time of the server per request; {row['api']['rps']:,.0f}/s", ""))
    workers = embedded["workers"]
    for layout, label in (("shared", "wrk and servers share the cores"), ("pinned", "wrk on CPU 0, servers on the rest")):
        if layout in workers:
            for key, name in (("read", "GET /patients/{id}, --workers 2 vs 1"), ("ceiling", "ceiling, 2 processes vs 1")):
                row = workers[layout][key]
                rows.append((name, f"{row['rps']:,.0f}/s", f"{row['ceiling_rps']:,.0f}/s", f"{row['ratio']:.2f}",
                             f"{label} ({workers['cores']} cores); p99 {row['p99']:.1f} ms", ""))
    versus("POST /patients", "create_patient", "p99 ≤ 25 ms, max ≤ 100 ms", slowest=True)
    two = embedded["two_processes"]
    rows.append(("POST /patients, two processes on one file", f"{two['rps']:,.0f}/s", "", "",
                 f"16 connections each; p99 {two['p99']:.1f} ms, max {two['max']:.0f} ms", ""))
    writing = embedded["read_while_writing"]
    rows.append(("read p99 while 16 connections write", f"{writing['p99_writing']:.1f} ms",
                 f"{writing['p99_quiet']:.1f} ms", f"{writing['ratio']:.2f}", "vs the read p99 alone", "≤ 2"))

    def conditional(store):
        put = results[store]["conditional_put"]
        rows.append((f"PUT /patients/{{id}} with If-Match [{measured_on(store)}]", f"{put['rps']:,.0f}/s",
                     f"{put['unconditional_rps']:,.0f}/s", f"{put['ratio']:.2f}",
                     f"p50 {put['p50']:.1f} ms, p99 {put['p99']:.1f} ms, {put['non2xx']} non-2xx; vs without If-Match", ""))

    conditional("sqlite")
    baseline = results.get("audit_baseline")
    if baseline:
        rows.append(("GET /patients/{id}, audited, vs before the audit trail", f"{baseline['rps']:,.0f}/s",
                     f"{baseline['before_rps']:,.0f}/s", f"{baseline['ratio']:.2f}",
                     f"median of {len(baseline['rounds']['this'])} rounds, at {audit_baseline}", "≥ 0.90"))
    scaling = embedded["list_scaling"]
    rows.append(("list p50: 100,000 vs 1,000 patients", f"{scaling['large']['p50']:.1f} ms",
                 f"{scaling['small']['p50']:.1f} ms", f"{scaling['p50_ratio']:.2f}", "(1,000,000 other rows)",
                 "≤ 1.5"))
    login = embedded["login"]
    rows.append(("POST /auth/login (bcrypt cost 12)", f"{login['logins_per_s']:.1f}/s",
                 f"{login['bcrypt_per_s']:.1f} hashes/s", f"{login['ratio']:.2f}", "vs bcrypt alone, 2 threads", ""))
    transfer = embedded["transfer"]
    for direction in ("upload", "download"):
        rows.append((f"1 MiB {direction}", f"{transfer[direction + '_mb_s']:,.0f} MB/s",
                     f"{transfer['loopback_mb_s']:,.0f} MB/s", f"{transfer[direction + '_mb_s'] / transfer['loopback_mb_s']:.2f}",
                     "vs a plain loopback copy", ""))
    export = embedded["export"]
    rows.append((f"RSS growth, GET /export of {export['patients']:,} patients", f"{export['growth_mib']:.1f} MiB", "",
                 "", f"{export['lines']:,} lines; first byte {export['first_byte_s'] * 1000:.0f} ms, "
                 f"last {export['total_s']:.1f} s", "≤ 16 MiB"))
    if "bulk_export" in embedded:  # results from before the asynchronous export have none
        bulk = embedded["bulk_export"]
        rows.append((f"RSS growth, bulk $export of {bulk['patients']:,} patients", f"{bulk['growth_mib']:.1f} MiB",
                     "", "", f"{bulk['lines']:,} lines; manifest after {bulk['manifest_s']:.1f} s, "
                     f"files read by {bulk['total_s']:.1f} s", "≤ 16 MiB"))
    if "backup" in embedded:  # results from before backups existed have none
        backup = embedded["backup"]
        for step in ("backup", "restore"):
            rows.append((f"{step} of {backup['patients']:,} patients, {backup['reports']} reports: RSS growth",
                         f"{backup[step + '_growth_mib']:.1f} MiB", "", "",
                         f"{backup[step + '_s']:.1f} s; backup {backup['size_mib']:.0f} MiB (database "
                         f"{backup['database_mib']:.0f} MiB)" + (", while serving" if step == "backup" else
                                                                 ", checked first, verify-audit after"),
                         "≤ 32 MiB"))
    objects = results.get("object_store")  # results from before the object store have none
    if objects:
        for direction in ("upload", "download"):
            rows.append((f"1 MiB {direction}, report files in S3 (versitygw) vs local files",
                         f"{objects['s3'][direction + '_mb_s']:,.0f} MB/s",
                         f"{objects['local'][direction + '_mb_s']:,.0f} MB/s", f"{objects[direction + '_ratio']:.2f}",
                         f"median of {len(objects['rounds']['s3'])} rounds each, in turn, on loopback", "≥ 0.50"))
        rows.append(("RSS growth, 10 × 50 MiB uploads to the object store",
                     f"{objects['upload_rss']['growth_mib']:.1f} MiB", "", "", "", "≤ 32 MiB"))
    rows.append(("RSS growth, 10 × 50 MiB uploads", f"{embedded['upload_rss']['growth_mib']:.1f} MiB", "", "", "",
                 "≤ 32 MiB"))
    for key, label, target in (("login_storm", "auth limit 10/60", "≤ 2"), ("login_storm_unlimited", "auth limit off", "")):
        storm = embedded[key]
        rows.append((f"read p99 during a login storm ({label})", f"{storm['p99_storm']:.1f} ms",
                     f"{storm['p99_quiet']:.1f} ms", f"{storm['ratio']:.2f}", "vs without the storm", target))
    if "mongodb" in results:
        versus("GET /patients/{id}", "get_patient", store="mongodb")
        versus("GET /patients?limit=20", "list_patients", store="mongodb")
        conditional("mongodb")
    header = ("scenario", "MediTrack", "reference", "ratio", "detail", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + " |")
