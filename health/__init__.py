"""`skillspot health`: the box's own checklist, for technicians, the playbook and monitoring."""
