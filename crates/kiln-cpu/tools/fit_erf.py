"""Fits the polynomials behind kiln-cpu's `special::erf` and prints them as Rust.

    pip install mpmath numpy && python3 crates/kiln-cpu/tools/fit_erf.py

Near zero, erf(x) / x is a polynomial in x^2 (on [0, 4], so |x| < 2); further out,
erfc(x) e^(x^2) is smooth on [2, 6], and erf(x) = 1 - e^(-x^2) times it (past 6, erf
is 1 in f64). Each is a Chebyshev fit in high precision over a variable scaled to
[-1, 1], so that Horner's rule in f64 does not cancel. The script also evaluates the
result in f64 and prints its largest error against mpmath's erf.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 50


def fit(f, a, b, terms):
    mid, half = (a + b) / 2, (b - a) / 2
    coefficients, error = mp.chebyfit(lambda s: f(mid + half * s), [-1, 1], terms, error=True)
    return [float(c) for c in coefficients], mid, half, error


near = fit(lambda u: mp.erf(mp.sqrt(u)) / mp.sqrt(u) if u > 0 else 2 / mp.sqrt(mp.pi), 0, 4, 18)
far = fit(lambda x: mp.erfc(x) * mp.exp(x * x), 2, 6, 21)


def horner(c, s):
    r = np.full_like(s, c[0])
    for k in c[1:]:
        r = r * s + k
    return r


def erf(x):
    ax = np.abs(x)
    a = x * horner(near[0], (x * x - near[1]) / near[2])
    xb = np.clip(ax, 2, 6)
    b = np.copysign(1 - np.exp(-xb * xb) * horner(far[0], (xb - far[1]) / far[2]), x)
    return np.where(ax < 2, a, np.where(ax >= 6, np.copysign(1.0, x), b))


xs = np.concatenate([np.linspace(-7, 7, 20001), np.linspace(1.9, 2.1, 2001)])
worst = max(abs(float(erf(np.array([x]))[0]) - float(mp.erf(mp.mpf(float(x))))) for x in xs)
print(f"// fit errors {mp.nstr(near[3], 3)} and {mp.nstr(far[3], 3)}; f64 evaluation within {worst:.3g} of erf")
for name, (c, mid, half, _) in (("NEAR", near), ("FAR", far)):
    print(f"const {name}: [f64; {len(c)}] = [")
    for k in c:
        print(f"    {k!r},")
    print("];")
