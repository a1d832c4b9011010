"""The DSD centre: box enrolment and sync API, traffic-log store (ClickHouse), admin pages.

Never imports box packages (base/, ledger/, portal/...); the only shared code is `syncapi`.
"""
