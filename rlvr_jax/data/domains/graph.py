r"""`graph`: grid and state-space puzzles (the paper's GRAPH: Reasoning Gym's largest island and
quantum lock), drawn 50/50.

island  A grid of 1 (land) and 0 (water); the size of the largest island (cells joined up, down,
        left or right). Steps: each island in reading order of its first cell (row, column from 1),
        `island at (1,2) has 3 cells`, then `largest = max(3, 1) = 3`. Grids are 3x3 (level 1),
        3x4, 4x4, 5x5, 5x6 (level 5).
lock    A number starting at 0 with a red light, three buttons (add / subtract / multiply, some
        only usable when the light is red or green), every press toggles the light; the fewest
        presses that make the number equal a target. Steps: one per press of a shortest sequence,
        `press A: 0 + 2 = 2, light green`, then `3 presses reach 8`. Level L needs L + 1 presses.
The checker follows the response's own claims: an island claim is checked by flood fill on the
grid; the last step of an island trace must list the sizes of every island; a press must be a
button of the problem usable with the current light, do its operation on the current number
and toggle the light; the last step of a lock trace must count the presses and reach the target.
"""
from __future__ import annotations

import random
import re
from collections import deque

from rlvr_jax.data.domains import base

GRID_SHAPES = {1: (3, 3), 2: (3, 4), 3: (4, 4), 4: (5, 5), 5: (5, 6)}
LAND_P = 0.45
BUTTONS = "ABC"
_OP_TEXT = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}"}
_COND_TEXT = {"any": "", "red": " (only when the light is red)",
              "green": " (only when the light is green)"}
_ISLAND = re.compile(r"island at \((\d+), ?(\d+)\) has (\d+) cells?\.?")
_MAX = re.compile(r"(?:largest = )?max\(([\d, ]*)\) = (\d+)\.?")
_PRESS = re.compile(r"press ([A-Z]): (-?\d+) ([-+*]) (\d+) = (-?\d+), light (red|green)\.?")
_COUNT = re.compile(r"(\d+) presses reach (-?\d+)\.?")
MAX_TARGET = 999

# ----------------------------------------------------------------------------------- island


def islands(grid: list[list[int]]) -> list[tuple[int, int, int]]:
  """(row, col, size) of each island, 1-based, in reading order of its first cell."""
  rows, cols = len(grid), len(grid[0])
  seen = [[False] * cols for _ in range(rows)]
  out = []
  for r in range(rows):
    for c in range(cols):
      if grid[r][c] == 1 and not seen[r][c]:
        out.append((r + 1, c + 1, len(_flood(grid, r, c, seen))))
  return out


def _flood(grid, r, c, seen=None) -> list[tuple[int, int]]:
  rows, cols = len(grid), len(grid[0])
  seen = seen if seen is not None else [[False] * cols for _ in range(rows)]
  seen[r][c] = True
  cells, queue = [], deque([(r, c)])
  while queue:
    a, b = queue.popleft()
    cells.append((a, b))
    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
      x, y = a + da, b + db
      if 0 <= x < rows and 0 <= y < cols and grid[x][y] == 1 and not seen[x][y]:
        seen[x][y] = True
        queue.append((x, y))
  return cells


def island_at(grid, row: int, col: int) -> frozenset | None:
  """The cells (0-based) of the island containing 1-based (row, col), None for water/outside."""
  if not (1 <= row <= len(grid) and 1 <= col <= len(grid[0])) or grid[row - 1][col - 1] != 1:
    return None
  return frozenset(_flood(grid, row - 1, col - 1))


def _island_problem(rng: random.Random, level: int) -> base.Problem:
  rows, cols = GRID_SHAPES[level]
  while True:
    grid = [[int(rng.random() < LAND_P) for _ in range(cols)] for _ in range(rows)]
    if any(any(row) for row in grid):
      break
  found = islands(grid)
  steps = [{"kind": "island", "row": r, "col": c, "size": s, "result": str(s),
            "text": f"island at ({r},{c}) has {s} {'cell' if s == 1 else 'cells'}"}
           for r, c, s in found]
  sizes = [s for _, _, s in found]
  best = max(sizes)
  steps.append({"kind": "max", "args": [str(s) for s in sizes], "result": str(best),
                "text": f"largest = max({', '.join(map(str, sizes))}) = {best}"})
  text = ("Here is a grid of land (1) and water (0):\n"
          + "\n".join(" ".join(map(str, row)) for row in grid)
          + "\nAn island is a group of 1s joined up, down, left or right. "
            "What is the size of the largest island?")
  return base.Problem(text, steps, str(best), {"task": "island", "grid": grid})


def _check_island(grid, statements: list[str]) -> list:
  out, claimed = [], {}  # island cells -> claimed size
  for st in statements:
    st = st.strip()
    m = _ISLAND.fullmatch(st)
    if m:
      r, c, s = map(int, m.groups())
      cells = island_at(grid, r, c)
      ok = cells is not None and len(cells) == s
      if cells is not None:
        claimed[cells] = s
      out.append((ok, str(s)))
      continue
    m = _MAX.fullmatch(st)
    if m:
      args = [int(a) for a in m.group(1).replace(" ", "").split(",") if a]
      value = int(m.group(2))
      every = {frozenset(_flood(grid, r - 1, c - 1)) for r, c, _ in islands(grid)}
      ok = (bool(args) and value == max(args) and sorted(args) == sorted(claimed.values())
            and set(claimed) == every)
      out.append((ok, str(value)))
      continue
    out.append((False, None))
  return out


# ------------------------------------------------------------------------------------- lock


def _apply(op: str, arg: int, x: int) -> int:
  return x + arg if op == "+" else x - arg if op == "-" else x * arg


def _usable(cond: str, light: str) -> bool:
  return cond == "any" or cond == light


def _toggle(light: str) -> str:
  return "green" if light == "red" else "red"


def shortest_presses(buttons, max_depth: int):
  """Exhaustive BFS from (0, red) over (number, light) states up to `max_depth` presses.

  Returns {value: (depth, path)}: the fewest presses that make the number `value` and the first
  such sequence in button order (a list of button indices).
  """
  start = (0, "red")
  parent = {start: None}
  frontier = [start]
  best = {0: (0, [])}
  for depth in range(1, max_depth + 1):
    nxt = []
    for state in frontier:
      x, light = state
      for i, (op, arg, cond) in enumerate(buttons):
        if not _usable(cond, light):
          continue
        y = _apply(op, arg, x)
        new = (y, _toggle(light))
        if new in parent:
          continue
        parent[new] = (state, i)
        nxt.append(new)
        if y not in best:
          path, s = [], new
          while parent[s] is not None:
            s, j = parent[s]
            path.append(j)
          best[y] = (depth, path[::-1])
    frontier = nxt
  return best


def _lock_problem(rng: random.Random, level: int) -> base.Problem:
  presses = level + 1
  while True:
    buttons = [("+", rng.randint(1, 4), "any")]
    for _ in range(2):
      op = rng.choice("+-*")
      arg = rng.randint(2, 3) if op == "*" else rng.randint(1, 5 if op == "+" else 3)
      buttons.append((op, arg, rng.choice(("any", "red", "green"))))
    rng.shuffle(buttons)
    if len({(op, arg) for op, arg, _ in buttons}) < 3:
      continue
    best = shortest_presses(buttons, presses)
    targets = sorted(v for v, (d, _) in best.items() if d == presses and 0 < v <= MAX_TARGET)
    if targets:
      break
  target = rng.choice(targets)
  _, path = best[target]
  steps, x, light = [], 0, "red"
  for i in path:
    op, arg, _ = buttons[i]
    y, light = _apply(op, arg, x), _toggle(light)
    steps.append({"kind": "press", "button": BUTTONS[i], "args": [str(x), str(arg)], "op": op,
                  "result": str(y), "light": light,
                  "text": f"press {BUTTONS[i]}: {x} {op} {arg} = {y}, light {light}"})
    x = y
  steps.append({"kind": "count", "count": presses, "target": target, "result": str(presses),
                "text": f"{presses} presses reach {target}"})
  lines = [f"{BUTTONS[i]}: {_OP_TEXT[op].format(arg)}{_COND_TEXT[cond]}"
           for i, (op, arg, cond) in enumerate(buttons)]
  text = ("A lock shows a number and a light. The number starts at 0 and the light is red. "
          "Each press of a button switches the light between red and green. Buttons:\n"
          + "\n".join(lines)
          + f"\nWhat is the fewest number of presses that makes the number {target}?")
  meta = {"task": "lock", "buttons": [[op, arg, cond] for op, arg, cond in buttons],
          "target": target}
  return base.Problem(text, steps, str(presses), meta)


def _check_lock(buttons, target: int, statements: list[str]) -> list:
  out, x, light, count = [], 0, "red", 0
  for st in statements:
    st = st.strip()
    m = _PRESS.fullmatch(st)
    if m:
      name, left, op, arg, res, new_light = m.groups()
      left, arg, res = int(left), int(arg), int(res)
      i = BUTTONS.find(name)
      ok = (0 <= i < len(buttons) and _usable(buttons[i][2], light)
            and (op, arg) == (buttons[i][0], buttons[i][1]) and left == x
            and _apply(op, arg, left) == res and new_light == _toggle(light))
      x, light, count = res, new_light, count + 1
      out.append((ok, str(res)))
      continue
    m = _COUNT.fullmatch(st)
    if m:
      n, t = int(m.group(1)), int(m.group(2))
      out.append((n == count and t == target and x == target, str(n)))
      continue
    out.append((False, None))
  return out


# --------------------------------------------------------------------------------- interface


def make_problem(rng: random.Random, level: int) -> base.Problem:
  """One graph problem (island or lock, 50/50) of difficulty `level`."""
  return _island_problem(rng, level) if rng.random() < 0.5 else _lock_problem(rng, level)


def check_steps(example: base.Example, statements: list[str]) -> list:
  meta = example.meta
  if meta["task"] == "island":
    return _check_island(meta["grid"], statements)
  buttons = [tuple(b) for b in meta["buttons"]]
  return _check_lock(buttons, int(meta["target"]), statements)


def perturb_step(example: base.Example, index: int, rng: random.Random) -> str:
  """Step `index` made false: an island with a wrong size, or a press with a wrong operand."""
  step = example.steps[index - 1]
  if step["kind"] == "island":
    s = base.nearby(step["size"], rng)
    return f"island at ({step['row']},{step['col']}) has {s} {'cell' if s == 1 else 'cells'}"
  if step["kind"] == "press":
    arg = base.nearby(int(step["args"][1]), rng)
    return (f"press {step['button']}: {step['args'][0]} {step['op']} {arg} = {step['result']}, "
            f"light {step['light']}")
  raise ValueError(f"{example.id}: step {index} ({step['kind']}) is not an intermediate step")


def foreign_ok(example: base.Example, other: base.Example) -> bool:
  """`other`'s first step is false on `example`'s grid / lock (or of the other task)."""
  if other.meta["task"] != example.meta["task"]:
    return True
  first = other.steps[0]
  if example.meta["task"] == "island":
    cells = island_at(example.meta["grid"], first["row"], first["col"])
    return cells is None or len(cells) != first["size"]
  op, arg, cond = example.meta["buttons"][BUTTONS.index(first["button"])]
  return (op, arg) != (first["op"], int(first["args"][1])) or not _usable(cond, "red")


_RULES = [
    "An island is a group of land cells (1) joined up, down, left or right.",
    "Cells that touch only at a corner are not joined.",
    "The size of an island is the number of its cells.",
    "To find the largest island, find the size of each island, then take the largest size.",
    "Read the grid row by row, from left to right.",
    "Each press of a button switches the light between red and green.",
    "A button marked only when the light is green cannot be pressed when the light is red.",
    "To find the fewest presses, try all sequences of 1 press, then of 2 presses, and so on.",
]


def fact_doc(rng: random.Random) -> str:
  """Rules of both puzzles and a few facts about max and button presses."""
  lines = rng.sample(_RULES, 3)
  for _ in range(3):
    xs = [rng.randint(1, 9) for _ in range(rng.randint(2, 5))]
    lines.append(f"max({', '.join(map(str, xs))}) = {max(xs)}.")
  x, light = rng.randint(0, 20), rng.choice(("red", "green"))
  op, arg = rng.choice("+-*"), rng.randint(1, 5)
  lines.append(f"With the number {x} and the light {light}, a press of a button that does "
               f"{_OP_TEXT[op].format(arg)} gives {x} {op} {arg} = {_apply(op, arg, x)}, light "
               f"{_toggle(light)}.")
  return "\n".join(lines)


SPEC = base.DomainSpec(name="graph", make_problem=make_problem, check_steps=check_steps,
                       perturb_step=perturb_step, foreign_ok=foreign_ok, fact_doc=fact_doc)
DOMAIN = base.Domain(SPEC)
generate = DOMAIN.generate
corrupt = DOMAIN.corrupt
verify_answer = DOMAIN.verify_answer
verify_steps = DOMAIN.verify_steps
corpus = DOMAIN.corpus
