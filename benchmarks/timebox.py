"""Time boxes of the device suite: each section has a budget, an alarm and a clock; a watchdog
ends the process at the total budget plus a grace, after writing the results.

Every section has a time budget (unused time passes to the later sections), checks the clock
between cases and records ``skipped: time`` for what it leaves out. A failure is recorded
(traceback in the JSON) and the next section runs. A per-section alarm interrupts a section that
overruns its budget, and a watchdog thread writes the results and ends the process at
``budget_s + WATCHDOG_GRACE_S`` seconds, so the suite never outlasts its window, even inside a
hung compile. The results are written (atomically) after every section and case.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
import traceback

from benchmarks import report

WATCHDOG_GRACE_S = 30.0


class SectionTimeout(BaseException):
  """A section ran past its budget and grace (raised by the alarm between Python bytecodes; a
  ``BaseException``, so that the per-case ``except Exception`` handlers let it through)."""


class Clock:
  """A section's deadline, and what it skipped for lack of time."""

  def __init__(self, budget_s: float):
    self.t0, self.budget_s = time.time(), budget_s
    self.skipped = []

  def elapsed(self) -> float:
    return time.time() - self.t0

  def left(self) -> float:
    return self.budget_s - self.elapsed()

  def sub(self, budget_s: float) -> "Clock":
    """A clock of at most ``budget_s`` (and this one's deadline) that records into this one."""
    c = Clock(min(budget_s, self.left()))
    c.skipped = self.skipped
    return c

  def skip(self, what: str, reason: str = "time") -> dict:
    entry = {"case": what, "skipped": reason}
    self.skipped.append(entry)
    print(f"  skipped ({reason}): {what}", flush=True)
    return entry


class Suite:
  """The results, their atomic writing, the budgets and the watchdog."""

  def __init__(self, args):
    self.args, self.t0 = args, time.time()
    self.lock = threading.RLock()
    self.res = {"suite": {"argv": sys.argv[1:], "smoke": args.smoke, "budget_s": args.budget_s,
                          "budgets_s": args.budgets, "sections": args.sections,
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                          "watchdog_s": args.budget_s + WATCHDOG_GRACE_S},
                "env": {}, "sections": {}}
    os.makedirs(args.out, exist_ok=True)
    self.json_path = os.path.join(args.out, "device_suite.json")
    self.md_path = os.path.join(args.out, "device_suite.md")

  def elapsed(self) -> float:
    return time.time() - self.t0

  def write(self) -> None:
    with self.lock:
      for _ in range(5):  # the watchdog thread may snapshot while the main thread appends
        try:
          snap = report.clean(copy.deepcopy(self.res))
          break
        except RuntimeError:
          time.sleep(0.01)
      else:
        return
      snap["suite"]["wall_s"] = self.elapsed()
      report.write_atomic(self.json_path, json.dumps(snap, indent=1))
      report.write_atomic(self.md_path, report.render_md(snap))

  def start_watchdog(self) -> None:
    deadline = self.t0 + self.args.budget_s + WATCHDOG_GRACE_S

    def watch():
      while time.time() < deadline:
        time.sleep(0.5)
      with self.lock:
        self.res["suite"]["watchdog"] = (f"ended the process at {self.elapsed():.0f} s "
                                         f"(budget {self.args.budget_s:.0f} s + "
                                         f"{WATCHDOG_GRACE_S:.0f} s)")
        for rec in self.res["sections"].values():
          if rec.get("status") == "running":
            rec["status"] = "killed: watchdog"
        try:
          self.write()
        finally:
          print("watchdog: time is up, results written", file=sys.stderr, flush=True)
          os._exit(3)  # pylint: disable=protected-access

    threading.Thread(target=watch, daemon=True, name="suite-watchdog").start()

  def section_budget(self, name: str) -> float:
    """The section's budget plus the time the earlier sections left unused; the later sections'
    budgets stay reserved."""
    sel = self.args.sections
    later = sum(self.args.budgets[s] for s in sel[sel.index(name) + 1:])
    left = self.args.budget_s - self.elapsed() - later
    return max(left, 0.3 * self.args.budgets[name])

  def run_section(self, name: str, fn, ctx) -> None:
    budget = self.section_budget(name)
    rec = {"title": report.TITLES[name], "status": "running", "budget_s": budget, "result": {}}
    with self.lock:
      self.res["sections"][name] = rec
    self.write()
    print(f"\n== section {name}: {report.TITLES[name]} (budget {budget:.0f} s)", flush=True)
    clock = Clock(budget)
    grace = max(5.0, min(20.0, 0.2 * budget))

    def on_alarm(signum, frame):
      raise SectionTimeout(f"section {name} passed its budget of {budget:.0f} s + {grace:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(math.ceil(budget + grace))))
    try:
      fn(ctx, rec["result"], clock, self)
      rec["status"] = "partial" if any(x["skipped"] == "time" for x in clock.skipped) else "ok"
    except SectionTimeout as e:
      rec["status"], rec["error"] = "timeout", str(e)
    except Exception:  # pylint: disable=broad-except  (recorded; the next section runs)
      rec["status"], rec["error"] = "error", traceback.format_exc()
      print(rec["error"], file=sys.stderr, flush=True)
    finally:
      signal.alarm(0)
      signal.signal(signal.SIGALRM, old)
      rec["wall_s"], rec["skipped"] = clock.elapsed(), clock.skipped
      self.write()
    print(f"   section {name}: {rec['status']} in {rec['wall_s']:.1f} s", flush=True)
