"""One date format on every page, whatever the language: seconds and the time zone included.

Ops people compare times across pages, logs and servers; "Nov. 29, 2026, 7:29 p.m." does neither.
"""
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
