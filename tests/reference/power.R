# Reference values for analysis/power.py and analysis/multiplicity.py.
# Run from the repository root: Rscript tests/reference/power.R  (writes tests/reference/power.json)
#   power.t.test(n, delta, sd, sig.level, type = "two.sample", alternative)      -> power
#   power.t.test(delta, sd, sig.level, power, alternative)                        -> n (uniroot, tol ~1.2e-4)
#   power.prop.test(n, p1, p2, sig.level, alternative) / (p1, p2, power, ...)     -> power / n
#   p.adjust(p, method = "holm")
suppressPackageStartupMessages(library(jsonlite))
ref_dir <- "tests/reference"
alt <- function(s) if (s == 1) "one.sided" else "two.sided"

t_power <- lapply(list(c(20, 1, 2, 0.05, 2), c(64, 0.5, 1, 0.05, 2), c(15, 3, 4, 0.01, 1),
                       c(100, 0.3, 1.2, 0.025, 1)), function(a)
  list(n = a[1], delta = a[2], sd = a[3], alpha = a[4], sided = a[5],
       power = power.t.test(n = a[1], delta = a[2], sd = a[3], sig.level = a[4],
                            alternative = alt(a[5]))$power))
t_n <- lapply(list(c(0.5, 1, 0.05, 0.8, 2), c(2, 5, 0.05, 0.9, 2), c(1, 1, 0.025, 0.8, 1)),
              function(a)
  list(delta = a[1], sd = a[2], alpha = a[3], power = a[4], sided = a[5],
       n = power.t.test(delta = a[1], sd = a[2], sig.level = a[3], power = a[4],
                        alternative = alt(a[5]))$n))
p_power <- lapply(list(c(50, 0.3, 0.5, 0.05, 2), c(200, 0.1, 0.15, 0.05, 2),
                       c(80, 0.4, 0.6, 0.025, 1)), function(a)
  list(n = a[1], p1 = a[2], p2 = a[3], alpha = a[4], sided = a[5],
       power = power.prop.test(n = a[1], p1 = a[2], p2 = a[3], sig.level = a[4],
                               alternative = alt(a[5]))$power))
p_n <- lapply(list(c(0.3, 0.5, 0.05, 0.8, 2), c(0.2, 0.35, 0.05, 0.9, 2),
                   c(0.5, 0.65, 0.025, 0.8, 1)), function(a)
  list(p1 = a[1], p2 = a[2], alpha = a[3], power = a[4], sided = a[5],
       n = power.prop.test(p1 = a[1], p2 = a[2], sig.level = a[3], power = a[4],
                           alternative = alt(a[5]))$n))
holm <- lapply(list(c(0.01, 0.04, 0.03, 0.005), c(0.2, 0.001, 0.049, 0.6, 0.012)), function(p)
  list(p = p, adjusted = p.adjust(p, method = "holm")))
write(toJSON(list(generated_by = "tests/reference/power.R", r_version = R.version.string,
                  t_power = t_power, t_n = t_n, prop_power = p_power, prop_n = p_n,
                  holm = holm), digits = NA, auto_unbox = TRUE, pretty = TRUE),
      file.path(ref_dir, "power.json"))
