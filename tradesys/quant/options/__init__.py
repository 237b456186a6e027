"""Options analytics: European pricing and Greeks, implied volatility, American exercise.

Conventions, one across the library (inputs are arrays, numpy or torch, broadcast together):

* S spot (or F forward for Black-76), K strike, T time to expiry in years (ACT/365), r continuously
  compounded risk-free rate, q continuous dividend yield (Black-76: q = r on the forward), sigma annualised
  volatility as a decimal (0.2 = 20%), is_call boolean (True call, False put).
* Greeks are plain partial derivatives in these units: vega = dV/dsigma per 1.00 of vol (divide by 100 for
  "per vol point"); rho = dV/dr per 1.00 of rate; theta = dV/dt in calendar time per year (= -dV/dT; divide by
  365 for "per day"); charm = dDelta/dt, veta = dVega/dt and color = dGamma/dt likewise per year of calendar
  time (the negative of d/dT). vanna = d2V/dS dsigma, vomma = d2V/dsigma2, speed = d3V/dS3,
  zomma = d3V/dS2 dsigma, ultima = d3V/dsigma3.
* Invalid rows come back NaN with an `OptionError` reason code per row; a batch never raises for one bad row.
"""
