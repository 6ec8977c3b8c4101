"""kcheck cr: checkpoint/restore commands behind a pre-flight probe."""
