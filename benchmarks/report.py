"""The reports of the benchmarks: JSON-safe results written atomically, the printed report of
``bench.py`` (with its derived fields and the targets that must hold) and the markdown report and
summary line of the device suite.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile

#: The device suite's sections, in the order of its report.
SECTIONS = ("a", "b", "c", "d", "e")
TITLES = {"a": "environment, matmul rate and bandwidth",
          "b": "training-step table and k=5000 evaluation beside PyTorch",
          "c": "many steps per dispatch (lax.scan) and the projected full protocol per row",
          "d": "the Table 1 rows trained together in one program",
          "e": "summary"}


def clean(obj):
  """JSON-safe: numpy scalars to Python, NaN / inf to None."""
  if isinstance(obj, dict):
    return {str(k): clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [clean(v) for v in obj]
  if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
    try:
      obj = obj.item()
    except (TypeError, ValueError):
      return str(obj)
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  return str(obj)


def write_atomic(path: str, text: str) -> None:
  """Writes ``text`` and a newline to ``path`` through a temporary file and a rename, so that a
  reader (or a process ended mid-write) never sees half a file."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp_suite_")
  with os.fdopen(fd, "w") as f:
    f.write(text + "\n")
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- formatting


def fmt(v, f: str = "{:.2f}", none: str = "-") -> str:
  """``f.format(v)``, or ``none`` for a missing value."""
  return none if v is None else f.format(v)


def na(v, f: str = "{:.2f}") -> str:
  """``f.format(v)``, or ``"n/a"`` for a missing value."""
  return fmt(v, f, "n/a")


def ratio_text(r: dict | None) -> str:
  """``'median (min-max)'`` of a ratio summary, ``'-'`` without one."""
  return "-" if not r else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def ms_text(side: dict | None) -> str:
  if not side:
    return "-"
  if "median" in side:
    return f"{side['median']:.3f}"
  return side.get("skipped") or ("error" if "error" in side else "-")


# ----------------------------------------------------------------------------- bench.py


def print_report(res: dict) -> None:
  env = res["env"]
  print(f"\n== dgmjax vs PyTorch: {env['cpu']} x{env['threads']} threads, {env['backend']}, "
        f"jax {env['jax']}, torch {env['torch']}; data: {env['data']}")
  print(f"machine matmul (JAX, f32 2048^3): median {res['machine']['jax_gflops_median']:.1f} "
        f"GFLOP/s over {len(res['machine']['jax_gflops_samples'])} samples "
        f"(min {min(res['machine']['jax_gflops_samples']):.1f}, "
        f"max {max(res['machine']['jax_gflops_samples']):.1f}); "
        f"PyTorch {res['machine']['torch_gflops']:.1f}")
  for a in res.get("agreement", []):
    print(f"agreement {a['model']}: log-weights {a['log_weights_rel']:.1e} (f64 "
          f"{a['log_weights_rel_f64']:.1e}), grads vae {a['grad_rel']['vae']:.1e} iwae "
          f"{a['grad_rel']['iwae']:.1e}, Adam step {a['adam_step_rel_lr']:.1e} lr, eval lse "
          f"{a['eval_lse_rel']:.1e}: {'OK' if a['ok'] else 'FAILED'}")
  if res.get("train"):
    print("\ntraining step (ms; median over reps), ratio = peer / dgmjax: median (min-max)")
    print(f"{'model':<7}{'obj':<5}{'B':>5}{'K':>4}{'mb':>4}{'dgmjax':>9}{'eager':>9}"
          f"{'compile':>9}{'ratio eager':>20}{'ratio compile':>20}{'GFLOP/s':>9}{'frac':>6}"
          f"{'jit s':>7}{'tc s':>7}{'MB j/e/c':>16}{'whole-batch':>13}")
    for r in res["train"]:
      d, e, c = r["dgmjax"], r["torch_eager"], r.get("torch_compile") or {}
      mem = "/".join(fmt(s.get("peak_rss_mb"), "{:.0f}") for s in (d, e, c))
      w = r.get("dgmjax_whole_batch")
      whole = "-" if not w else f"{w['median']:.1f} ({r['microbatch_speedup']['median']:.2f}x)"
      print(f"{r['model']:<7}{r['objective']:<5}{r['B']:>5}{r['K']:>4}"
            f"{r.get('microbatch', r['B']):>4}"
            f"{fmt(d.get('median')):>9}{fmt(e.get('median')):>9}"
            f"{fmt(c.get('median')) if 'error' not in c else 'error':>9}"
            f"{ratio_text(r['ratio_eager']):>20}{ratio_text(r['ratio_compile']):>20}"
            f"{fmt(r['dgmjax_gflops'], '{:.1f}'):>9}{fmt(r['flop_fraction']):>6}"
            f"{fmt(d.get('compile_s'), '{:.1f}'):>7}{fmt(c.get('compile_s'), '{:.1f}'):>7}"
            f"{mem:>16} {whole:>13}")
  if res.get("eval"):
    print(f"\nk={res['eval'][0]['K']} evaluation (ms per image; median over reps), "
          "ratio = peer / dgmjax")
    print(f"{'model':<7}{'B':>5}{'chunk':>11}{'rows':>7}{'dgmjax':>9}{'eager':>9}{'compile':>9}"
          f"{'ratio eager':>20}{'ratio compile':>20}{'GFLOP/s':>9}{'frac':>6}{'10k extrap s':>13}"
          f"{'MB j/e/c':>16}")
    for r in res["eval"]:
      d, e, c = r["dgmjax"], r["torch_eager"], r.get("torch_compile") or {}
      mem = "/".join(fmt(s.get("peak_rss_mb"), "{:.0f}") for s in (d, e, c))
      lab = f"auto={r['chunk']}" if r["chunk_setting"] == "auto" else str(r["chunk"])
      ms = lambda s: fmt(None if s.get("median") is None else s["median"] * 1e3, "{:.1f}")
      print(f"{r['model']:<7}{r['B']:>5}{lab:>11}{r['rows_per_matmul']:>7}{ms(d):>9}{ms(e):>9}"
            f"{ms(c) if 'error' not in c else 'error':>9}"
            f"{ratio_text(r['ratio_eager']):>20}{ratio_text(r['ratio_compile']):>20}"
            f"{r['dgmjax_gflops']:>9.1f}{r['flop_fraction']:>6.2f}"
            f"{r['extrapolated_10000_images_s'].get('dgmjax', float('nan')):>13.0f}{mem:>16}")
    for b in res.get("eval_best", []):
      print(f"best chunks ({b['model']}): dgmjax {b['dgmjax_chunk']} "
            f"({b['dgmjax_ms_per_image']:.1f} ms/img), eager {b['eager_chunk']} "
            f"({b['eager_ms_per_image']:.1f}), compile {b.get('compile_chunk')} "
            f"({fmt(b.get('compile_ms_per_image'), '{:.1f}')}): ratio eager "
            f"{b['ratio_eager']:.2f}, compile {fmt(b.get('ratio_compile'))}; "
            f"10,000 images (extrapolated): {b['dgmjax_10000_s']:.0f} s")
  for b in res.get("eval_best", []):
    print(f"k=5000 evaluation at the best chunk ({b['model']}): "
          f"{b['flop_fraction_at_best']:.2f} of the machine's matmul FLOP/s measured next to it, "
          f"{b['flop_fraction_at_best_vs_max']:.2f} of the run's best matmul sample")
  for p in res.get("precision", []):
    print(f"\nNLL shift vs float32 ({p['model']}, {p['images']} images, K={p['K']}"
          f"{', emulated by rounding on CPU' if p['emulated'] else ''}): float32 NLL "
          f"{p['float32']['nll']:.3f} +- {p['float32']['standard_error']:.2f}; TF32 "
          f"{p['tensorfloat32']['nll_shift']:+.4f} nats (max per image "
          f"{p['tensorfloat32']['max_abs_shift_per_image']:.4f}); bf16 "
          f"{p['bfloat16']['nll_shift']:+.4f} (max {p['bfloat16']['max_abs_shift_per_image']:.4f})")


def best_eval(rows) -> list[dict]:
  out = []
  for name in sorted({r["model"] for r in rows}):
    rs = [r for r in rows if r["model"] == name]
    best = lambda side: min((r for r in rs if r[side].get("median") is not None),
                            key=lambda r: r[side]["median"], default=None)
    d, e, c = best("dgmjax"), best("torch_eager"), best("torch_compile") if "torch_compile" in \
        rs[0] else None
    rec = {"model": name, "dgmjax_chunk": d["chunk"], "dgmjax_ms_per_image": d["dgmjax"]["median"]
           * 1e3, "eager_chunk": e["chunk"], "eager_ms_per_image": e["torch_eager"]["median"] * 1e3,
           "ratio_eager": e["torch_eager"]["median"] / d["dgmjax"]["median"],
           "dgmjax_10000_s": d["dgmjax"]["median"] * 10000,
           "flop_fraction_at_best": d["flop_fraction"],
           "flop_fraction_at_best_vs_max": d["flop_fraction_vs_max"]}
    if c is not None:
      rec.update(compile_chunk=c["chunk"], compile_ms_per_image=c["torch_compile"]["median"] * 1e3,
                 ratio_compile=c["torch_compile"]["median"] / d["dgmjax"]["median"])
    out.append(rec)
  return out


def finalize(res: dict) -> None:
  """Derived fields: FLOP fractions, the best evaluation chunks, the must-hold summary.

  ``flop_fraction`` compares dgmjax's matmul FLOP/s with the machine's matmul rate sampled next
  to the same repetitions (a shared machine's speed changes during a run); ``_vs_max`` with the
  run's best sample (the least loaded moment: the conservative figure).
  """
  samples = res["machine"]["jax_gflops_samples"]
  res["machine"]["jax_gflops_median"] = statistics.median(samples)
  res["machine"]["jax_gflops_max"] = max(samples)
  for r in res.get("train", []) + res.get("eval", []):
    g, adj = r.get("dgmjax_gflops"), r.get("machine_gflops_adjacent")
    r["flop_fraction"] = None if g is None or not adj else g / adj
    r["flop_fraction_vs_max"] = None if g is None else g / res["machine"]["jax_gflops_max"]
  if res.get("eval"):
    res["eval_best"] = best_eval(res["eval"])
  res["must_hold"] = must_hold(res)


def must_hold(res: dict) -> dict:
  """The targets of the benchmark's issue, evaluated on this run."""
  out = {}
  tr = res.get("train", [])
  if tr:
    slower = [f"{r['model']} B={r['B']} K={r['K']} vs {side}" for r in tr
              for side in ("ratio_eager", "ratio_compile") if r.get(side)
              and r[side]["median"] <= 1.0]
    out["train_faster_everywhere"] = {"ok": not slower, "not_faster": slower}
    at = [r for r in tr if r["B"] == 20 and r["K"] == 50]
    out["train_ratio_B20_K50_ge_1.5"] = {
        f"{r['model']} {side}": round(r[side]["median"], 3)
        for r in at for side in ("ratio_eager", "ratio_compile") if r.get(side)}
  for b in res.get("eval_best", []):
    out[f"eval_best_ratio_ge_1.5 {b['model']}"] = {
        "eager": round(b["ratio_eager"], 3),
        "compile": None if b.get("ratio_compile") is None else round(b["ratio_compile"], 3)}
    out[f"eval_flop_fraction_ge_0.5 {b['model']}"] = {
        "vs_adjacent_matmul": round(b["flop_fraction_at_best"], 3),
        "vs_best_matmul_sample": round(b["flop_fraction_at_best_vs_max"], 3),
        "every_chunk_vs_adjacent": [round(r["flop_fraction"], 3) for r in res["eval"]
                                    if r["model"] == b["model"]]}
  return out


# ----------------------------------------------------------------------------- the device suite


def summary_line(res: dict) -> str:
  env, secs = res.get("env", {}), res.get("sections", {})
  parts = [f"{env.get('device_kind', env.get('device', '?'))}, jax {env.get('jax', '?')}"
           f"{', torch ' + env['torch'] if env.get('torch') else ''}"]
  a = secs.get("a", {}).get("result", {})
  if a.get("matmul"):
    t = a["matmul"]["tflops"]
    parts.append("matmul " + "/".join(na(t.get(f"jax_{k}"), "{:.1f}") for k in
                                      ("float32", "tensorfloat32", "bfloat16"))
                 + " TFLOP/s (f32/TF32/bf16)")
  b = secs.get("b", {}).get("result", {})
  tr = [r for r in b.get("train", []) if "dgmjax" in r]
  for side, label in (("ratio_eager", "eager"), ("ratio_compile", "compile"),
                      ("ratio_reduce_overhead", "reduce-overhead")):
    rs = [r[side]["median"] for r in tr if r.get(side)]
    if rs:
      at = [f"{r['model'][-1]}L {na(r[side]['median'])}" for r in tr
            if r.get(side) and r["B"] == 20 and r["K"] == 50]
      parts.append(f"train step vs {label} x{na(statistics.median(rs))} "
                   f"(median of {len(rs)}; min {na(min(rs))}"
                   f"{'; B=20 K=50: ' + ', '.join(at) if at else ''})")
  if "agreement_ok" in b:
    parts.append("agreement " + ("OK" if b["agreement_ok"] else "FAILED"))
  ev = [r for r in b.get("eval", []) if "seconds" in r]
  for model in dict.fromkeys(r["model"] for r in ev):
    rs = [r for r in ev if r["model"] == model]
    tor = next((r for r in rs if r["side"] == "torch_eager"), None)
    dg = [r for r in rs if r["side"].startswith("dgmjax")]
    if dg:
      ref = dg[0]
      txt = (f"k={ref['K']} eval {model}: {na(ref['seconds_10000_images'], '{:.1f}')} s per "
             f"10,000 images ({ref['precision']}, {na(ref['flop_fraction'])} of its matmul rate)")
      if tor:
        txt += f", x{na(tor.get('ratio_vs_dgmjax'))} vs eager"
      txt += "".join(f", {r['precision']} {na(r['seconds_10000_images'], '{:.1f}')} s "
                     f"({na(r['flop_fraction'])})" for r in dg[1:])
      parts.append(txt)
  c = secs.get("c", {}).get("result", {})
  if c.get("fused_speedup_median"):
    lo, hi = c["protocol_hours_range"]
    parts.append(f"fused steps x{na(c['fused_speedup_median'])} over per-step dispatch; "
                 f"full protocol {na(lo)}-{na(hi)} h per row")
  d = secs.get("d", {}).get("result", {})
  if d.get("protocol_hours_together"):
    parts.append(f"{len(d.get('runs', []))} runs together {na(d['protocol_hours_together'])} h "
                 f"for the full protocol"
                 + (f" vs {na(d['protocol_hours_alone_sum'])} h alone "
                    f"(x{na(d.get('speedup_fused'))})" if d.get("protocol_hours_alone_sum")
                    else ""))
  bad = [f"{k}: {v.get('status')}" for k, v in secs.items()
         if v.get("status") not in ("ok", "partial", "running")]
  if bad:
    parts.append("NOT OK: " + ", ".join(bad))
  return "SUMMARY: " + "; ".join(parts)


def render_md(res: dict) -> str:
  env, secs = res.get("env", {}), res.get("sections", {})
  s = res.get("suite", {})
  L = ["# dgmjax device suite", "",
       f"{env.get('device_kind', env.get('device', '?'))} ({env.get('backend', '?')}); "
       f"jax {env.get('jax', '?')}, torch {env.get('torch') or '-'}, python "
       f"{env.get('python', '?')}; matmuls {env.get('matmul_precision', '?')}; data: "
       f"{env.get('data', '?')}; {'smoke run; ' if s.get('smoke') else ''}"
       f"{s.get('wall_s', 0):.0f} s of a {s.get('budget_s', 0):.0f} s budget.", ""]
  if env.get("setup_error"):
    L += ["**Setup failed:**", "", "```", env["setup_error"], "```", ""]
  for name in SECTIONS:
    rec = secs.get(name)
    if rec is None:
      continue
    r = rec.get("result", {})
    L += [f"## {name}. {rec['title']}", "",
          f"status **{rec.get('status')}**, {rec.get('wall_s', 0):.1f} s of "
          f"{rec.get('budget_s', 0):.0f} s"
          + (f"; skipped: {', '.join(x['case'] for x in rec['skipped'])}"
             if rec.get("skipped") else ""), ""]
    if rec.get("error"):
      L += ["```", rec["error"].strip()[-3000:], "```", ""]
    if name == "a" and r.get("matmul"):
      t = r["matmul"]["tflops"]
      L += [f"device {r.get('device_kind')}, memory {na(r.get('device_memory_gib'), '{:.0f}')} "
            f"GiB (XLA's limit {na(r.get('xla_memory_limit_gib'), '{:.0f}')} GiB)"
            f"{'; ' + r['nvidia_smi'] if r.get('nvidia_smi') else ''}", "",
            f"| matmul {r['matmul']['n']}^3 (TFLOP/s) | float32 | TF32 | bfloat16 |",
            "|---|---|---|---|"]
      for lib in ("jax", "torch"):
        if any(k.startswith(lib) for k in t):
          L.append(f"| {lib} | " + " | ".join(na(t.get(f"{lib}_{k}"), "{:.2f}") for k in
                                             ("float32", "tensorfloat32", "bfloat16")) + " |")
      if r["matmul"].get("note"):
        L += ["", r["matmul"]["note"]]
      bw = r.get("bandwidth", {})
      if bw:
        L += ["", f"bandwidth ({bw['mib']} MiB): JAX read+write "
              f"{na(bw.get('jax_read_write_gbs'), '{:.0f}')} GB/s, PyTorch copy "
              f"{na(bw.get('torch_copy_gbs'), '{:.0f}')} GB/s, host to device "
              f"{na(bw.get('jax_host_to_device_gbs'), '{:.1f}')} GB/s"]
      L.append("")
    if name == "b":
      for a in r.get("agreement", []):
        if "skipped" in a:
          L.append(f"- agreement: skipped ({a['skipped']})")
        elif "error" in a:
          L.append(f"- agreement {a['model']}: ERROR {a['error']}")
        else:
          L.append(f"- agreement {a['model']}: {'OK' if a['ok'] else 'FAILED'} (log-weights "
                   f"{a['log_weights_rel']:.1e}, grads {a['grad_rel']['vae']:.1e} / "
                   f"{a['grad_rel']['iwae']:.1e}, Adam {a['adam_step_rel_lr']:.1e} lr, eval lse "
                   f"{a['eval_lse_rel']:.1e}, f64 {a['log_weights_rel_f64']:.1e})")
      if r.get("train"):
        L += ["", "training step, ms (median over reps); ratio = peer / dgmjax: median "
              "(min-max)", "",
              "| model | obj | B | K | dgmjax | eager | compile | reduce-overhead | ratio eager |"
              " ratio compile | ratio r-o | GFLOP/s | frac |", "|" + "---|" * 13]
        for t in r["train"]:
          if "dgmjax" not in t:  # skipped, or an error (its traceback is in the JSON)
            what = f"skipped: {t['skipped']}" if "skipped" in t else "error"
            L.append(f"| {t['model']} | | {t['B']} | {t['K']} | {what} |" + " |" * 8)
            continue
          L.append(f"| {t['model']} | {t['objective']} | {t['B']} | {t['K']} | "
                   f"{ms_text(t.get('dgmjax'))} | {ms_text(t.get('torch_eager'))} | "
                   f"{ms_text(t.get('torch_compile'))} | "
                   f"{ms_text(t.get('torch_compile_reduce_overhead'))} | "
                   f"{ratio_text(t.get('ratio_eager'))} | {ratio_text(t.get('ratio_compile'))} | "
                   f"{ratio_text(t.get('ratio_reduce_overhead'))} | "
                   f"{na(t.get('dgmjax_gflops'), '{:.1f}')} | {na(t.get('flop_fraction'))} |")
      ev = [e for e in r.get("eval", []) if "seconds" in e]
      if ev:
        e0 = ev[0]
        L += ["", f"k={e0['K']} evaluation of {e0['images']} test images (batch {e0['B']}, "
              f"chunk {e0['chunk']}; {e0['params']}); ratio = peer / dgmjax", "",
              "| model | side | precision | seconds | s / 10k images | GFLOP/s | frac of matmul "
              "rate | NLL | ratio |", "|" + "---|" * 9]
        for e in ev:
          L.append(f"| {e['model']} | {e['side']} | {e['precision']} | {e['seconds']:.3f} | "
                   f"{e['seconds_10000_images']:.2f} | {e['gflops']:.1f} | "
                   f"{na(e.get('flop_fraction'))} | {na(e.get('nll'))} | "
                   f"{na(e.get('ratio_vs_dgmjax'))} |")
      for e in r.get("eval", []):
        if "seconds" not in e:
          L.append(f"- eval {e['model']} {e.get('side', '')}: "
                   f"{e.get('skipped') or e.get('error')}")
      L.append("")
    if name == "c" and r.get("rows"):
      p = r.get("protocol", {})
      L += [f"B={r['B']}, {r['steps_per_dispatch']} steps per fused dispatch; the full protocol "
            f"is {p.get('steps')} steps ({p.get('epochs')} epochs x {p.get('steps_per_epoch')})",
            "", "| model | obj | K | steps/s per dispatch | steps/s fused | speedup | full "
            "protocol (h) |", "|---|---|---|---|---|---|---|"]
      for x in r["rows"]:
        if "fused_steps_per_s" not in x:
          L.append(f"| {x['model']} | {x['objective']} | {x['K']} | skipped: "
                   f"{x.get('skipped')} | | | |")
          continue
        L.append(f"| {x['model']} | {x['objective']} | {x['K']} | "
                 f"{x['dispatch_steps_per_s']:.0f} | {x['fused_steps_per_s']:.0f} | "
                 f"{x['fused_speedup']:.2f} | {x['protocol_hours']:.2f} |")
      u = r.get("unrolled")
      if u and "fused_steps_per_s" in u:
        L += ["", f"unroll={u['unroll']} ({u['model']} {u['objective']} K={u['K']}): "
              f"{u['fused_steps_per_s']:.0f} steps/s, x{u['speedup_vs_unroll_1']:.2f} over "
              "unroll=1"]
      L.append("")
    if name == "d" and r.get("runs"):
      L += [f"{len(r['runs'])} runs in {r.get('groups')} groups ({r.get('note', '')}).", ""]
      L.append(f"- one step of all runs per dispatch: "
               f"{na(r.get('joint_dispatch_step_ms'), '{:.3f}')}"
               f" ms; the runs alone, summed: {na(r.get('alone_dispatch_step_ms_sum'), '{:.3f}')}"
               f" ms (x{na(r.get('speedup_dispatch'))})")
      L.append(f"- fused ({r.get('plan', {}).get('steps_per_dispatch')} steps per dispatch): "
               f"{na(r.get('joint_fused_step_ms'), '{:.3f}')} ms per step of all runs; the runs "
               f"alone, summed: {na(r.get('alone_fused_step_ms_sum'), '{:.3f}')} ms "
               f"(x{na(r.get('speedup_fused'))})")
      L.append(f"- full protocol for all runs: {na(r.get('protocol_hours_together'))} h "
               f"together, {na(r.get('protocol_hours_alone_sum'))} h one after another")
      if r.get("trained"):
        tr = r["trained"]
        L.append(f"- trained {tr['epochs']:.2f} epochs ({tr['steps']} steps, Burda's schedule "
                 f"compressed to {r['plan']['epochs']:.2f} epochs) in {tr['seconds']:.1f} s; "
                 f"data: {r['plan']['data']}")
      if r.get("rows"):
        L += ["", "| model | obj | K | training bound (last dispatch) | test NLL |",
              "|---|---|---|---|---|"]
        for x in r["rows"]:
          nll = (f"{x['test_nll']:.2f} ± {x['test_nll_se']:.2f} (k={x['eval_k']}, "
                 f"{x['eval_images']} images)" if "test_nll" in x else "-")
          L.append(f"| {x['model']} | {x['objective']} | {x['K']} | "
                   f"{x['train_bound_last_dispatch']:.2f} | {nll} |")
      L.append("")
    if name == "e" and r.get("line"):
      L += [r["line"], ""]
  if s.get("watchdog"):
    L += [f"**Watchdog:** {s['watchdog']}", ""]
  return "\n".join(L)
