"""Service levels: clocks over records in business time (see docs/sla.md).

- `calendar` — business-time arithmetic over working hours and holidays, DST-safe;
- `clocks` — one clock's state and its transitions (start, pause, resume, retarget,
  stop, tick), pure functions of a calendar and a time;
- `store` — the `_metacrm_sla_clocks` system table;
- `policies` — Registry policies with their conditions parsed and calendars built;
- `engine` — what a record write does to its clocks (`record_writing`);
- `sweep` — the periodic job: warnings, breaches, escalations up the org tree;
- `api` — `GET /api/v1/<module>/<entity>/<id>/sla` and its OpenAPI paths;
- `plugin` — the hook implementations (a built-in plugin).
"""

from .calendar import BusinessCalendar
from .clocks import BREACHED, MET, PAUSED, RUNNING, Clock

__all__ = ["BREACHED", "MET", "PAUSED", "RUNNING", "BusinessCalendar", "Clock"]
