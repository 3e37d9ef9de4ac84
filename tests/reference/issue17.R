# Reference values for the estimators added by issue #17 (writes tests/reference/issue17.json).
# Run from the repository root: Rscript tests/reference/issue17.R
#   chisq.test(table(arm, resp)) with R's default Yates correction, on binary_a/b.csv, and on
#     worked example Y-1 of the estimands reference (matrix(c(15, 8, 5, 12), 2))
#   coxph(Surv(time, event) ~ arm [+ age], ties = "efron"): summary(fit)$sctest (score),
#     $logtest (likelihood ratio), $waldtest, on survival_a/b.csv and on worked example C-1
#   geepack::geeglm(chg ~ arm + base + age, corstr = "exchangeable"): the naive (model-based)
#     SE, sqrt(diag(fit$geese$vbeta.naiv)), beside the robust one
suppressPackageStartupMessages({library(survival); library(geepack); library(jsonlite)})
ref_dir <- "tests/reference"
rd <- function(file) read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)

yates <- function(file, reference) {
  d <- rd(file)
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  chi <- suppressWarnings(chisq.test(table(d$arm, d$resp)))
  list(file = file, reference = reference, statistic = unname(chi$statistic),
       p_value = chi$p.value)
}
y1 <- suppressWarnings(chisq.test(matrix(c(15, 8, 5, 12), 2)))

cox <- function(d, reference, rhs) {
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  fit <- coxph(as.formula(paste("Surv(time, event) ~", rhs)), data = d, ties = "efron")
  s <- summary(fit)
  list(rhs = rhs, reference = reference, score = unname(s$sctest["test"]),
       score_p = unname(s$sctest["pvalue"]), lrt = unname(s$logtest["test"]),
       lrt_p = unname(s$logtest["pvalue"]), wald = unname(s$waldtest["test"]),
       wald_p = unname(s$waldtest["pvalue"]), df = unname(s$sctest["df"]))
}
c1 <- data.frame(time = c(6, 10, 15, 22, 30, 3, 5, 8, 12, 18),
                 event = c(1, 0, 1, 0, 1, 1, 1, 1, 0, 1),
                 arm = c(rep("ACT", 5), rep("PBO", 5)))

gee <- function(file, reference, covs) {
  d <- rd(file)
  d <- d[order(d$subject), ]
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  d$subject <- factor(d$subject)
  fml <- as.formula(paste("chg ~", paste(c("arm", covs), collapse = " + ")))
  g <- eval(bquote(geeglm(.(fml), id = subject, data = d, corstr = "exchangeable",
                          control = geese.control(epsilon = 1e-12, maxit = 100))))
  nm <- paste0("arm", arms[2])
  k <- which(names(coef(g)) == nm)
  list(file = file, reference = reference, covariates = covs,
       estimate = unname(coef(g)[k]), se_robust = sqrt(diag(g$geese$vbeta))[k],
       se_naive = sqrt(diag(g$geese$vbeta.naiv))[k])
}

out <- list(
  generated_by = "tests/reference/issue17.R", r_version = R.version.string,
  survival = as.character(packageVersion("survival")),
  geepack = as.character(packageVersion("geepack")),
  yates = list(yates("binary_a.csv", "control"), yates("binary_b.csv", "placebo")),
  yates_y1 = list(statistic = unname(y1$statistic), p_value = y1$p.value),
  cox = list(cox(rd("survival_a.csv"), "control", "arm"),
             cox(rd("survival_a.csv"), "control", "arm + age"),
             cox(rd("survival_b.csv"), "soc", "arm + strata(stratum)"),
             cox(rd("survival_b.csv"), "soc", "arm")),
  cox_c1 = cox(c1, "PBO", "arm"),
  gee = list(gee("gee_a.csv", "control", c("base", "age")),
             gee("gee_b.csv", "control", character(0))))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(ref_dir, "issue17.json"))
