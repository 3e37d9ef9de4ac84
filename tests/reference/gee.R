# Reference values for analysis/estimators/gee.py.
# Run from the repository root: Rscript tests/reference/gee.R  (writes tests/reference/gee.json)
#   geepack::geeglm(chg ~ arm + base + age, id = subject, corstr = "exchangeable",
#                   control = geese.control(epsilon = 1e-12, maxit = 100))   robust "san.se"
#   nlme::lme(chg ~ arm + base + age, random = ~ 1 | subject, method = "REML");
#   intervals(fit, which = "fixed") for t CIs with nlme's containment df
suppressPackageStartupMessages({library(geepack); library(nlme); library(jsonlite)})
ref_dir <- "tests/reference"

case <- function(file, reference, covs) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  d <- d[order(d$subject), ]
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  d$subject <- factor(d$subject)
  fml <- as.formula(paste("chg ~", paste(c("arm", covs), collapse = " + ")))
  g <- eval(bquote(geeglm(.(fml), id = subject, data = d, corstr = "exchangeable",
                          control = geese.control(epsilon = 1e-12, maxit = 100))))
  gs <- summary(g)$coefficients
  nm <- paste0("arm", arms[2])
  m <- eval(bquote(lme(.(fml), random = ~ 1 | subject, data = d, method = "REML",
                       control = lmeControl(tolerance = 1e-12, msTol = 1e-12))))
  tt <- summary(m)$tTable
  iv <- intervals(m, which = "fixed")$fixed
  vc <- as.numeric(VarCorr(m)[, "StdDev"])
  list(file = file, reference = reference, covariates = covs, formula = deparse(fml),
       gee = list(estimate = gs[nm, "Estimate"], se = gs[nm, "Std.err"], wald = gs[nm, "Wald"],
                  p_value = gs[nm, "Pr(>|W|)"], alpha = unname(g$geese$alpha),
                  scale = unname(g$geese$gamma)),
       lme = list(estimate = tt[nm, "Value"], se = tt[nm, "Std.Error"], df = tt[nm, "DF"],
                  p_value = tt[nm, "p-value"], ci_low = iv[nm, "lower"], ci_high = iv[nm, "upper"],
                  sd_cluster = vc[1], sd_residual = vc[2], all_df = unname(tt[, "DF"]),
                  logLik = as.numeric(logLik(m))))
}
cases <- list(case("gee_a.csv", "control", c("base", "age")),
              case("gee_b.csv", "control", c("base", "age")),
              case("gee_b.csv", "control", character(0)))
write(toJSON(list(generated_by = "tests/reference/gee.R", r_version = R.version.string,
                  geepack = as.character(packageVersion("geepack")),
                  nlme = as.character(packageVersion("nlme")), cases = cases),
             digits = NA, auto_unbox = TRUE, pretty = TRUE),
      file.path(ref_dir, "gee.json"))
