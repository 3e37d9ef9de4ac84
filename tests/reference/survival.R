# Reference values for analysis/estimators/survival.py.
# Run from the repository root: Rscript tests/reference/survival.R  (writes tests/reference/survival.json)
#   per arm: survfit(Surv(time, event) ~ 1, conf.type = "log" | "log-log")   (Greenwood)
#            quantile(fit, 0.5) for the median and its CI; summary(fit, times = landmarks)
#   survdiff(Surv(time, event) ~ arm) and survdiff(Surv(time, event) ~ arm + strata(stratum))
#   coxph(Surv(time, event) ~ arm [+ age] [+ strata(stratum)] [+ stratum], ties = "efron")
suppressPackageStartupMessages({library(survival); library(jsonlite)})
ref_dir <- "tests/reference"

km_case <- function(d, arms, conf_type, landmarks) {
  lapply(arms, function(a) {
    s <- d[d$arm == a, ]
    fit <- survfit(Surv(time, event) ~ 1, data = s, conf.type = conf_type)
    q <- quantile(fit, 0.5)
    sm <- summary(fit, times = landmarks)
    list(arm = a, time = fit$time, n_risk = fit$n.risk, n_event = fit$n.event,
         n_censor = fit$n.censor, surv = fit$surv, std_err = fit$std.err * fit$surv,
         lower = fit$lower, upper = fit$upper,
         median = unname(q$quantile), median_low = unname(q$lower),
         median_high = unname(q$upper),
         landmark_time = sm$time, landmark_surv = sm$surv, landmark_se = sm$std.err,
         landmark_lower = sm$lower, landmark_upper = sm$upper)
  })
}

cox_case <- function(d, rhs) {
  fml <- as.formula(paste("Surv(time, event) ~", rhs))
  fit <- coxph(fml, data = d, ties = "efron")
  co <- summary(fit)$coefficients
  ci <- summary(fit)$conf.int
  list(rhs = rhs, coef = unname(co[1, "coef"]), hr = unname(co[1, "exp(coef)"]),
       se = unname(co[1, "se(coef)"]), p_value = unname(co[1, "Pr(>|z|)"]),
       ci_low = unname(ci[1, "lower .95"]), ci_high = unname(ci[1, "upper .95"]),
       loglik = fit$loglik, lrt = unname(summary(fit)$logtest["test"]),
       lrt_df = unname(summary(fit)$logtest["df"]), all_coef = unname(coef(fit)))
}

case <- function(file, reference, landmarks, cox_rhs) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  lr <- survdiff(Surv(time, event) ~ arm, data = d)
  slr <- survdiff(Surv(time, event) ~ arm + strata(stratum), data = d)
  list(file = file, reference = reference, landmarks = landmarks,
       km_log = km_case(d, arms, "log", landmarks),
       km_loglog = km_case(d, arms, "log-log", landmarks),
       logrank = lr$chisq, logrank_p = pchisq(lr$chisq, length(arms) - 1, lower.tail = FALSE),
       strat_logrank = slr$chisq,
       strat_logrank_p = pchisq(slr$chisq, length(arms) - 1, lower.tail = FALSE),
       cox = lapply(cox_rhs, function(r) cox_case(d, r)))
}

cases <- list(
  case("survival_a.csv", "control", c(6, 12, 24),
       c("arm", "arm + age", "arm + age + strata(stratum)", "arm + stratum")),
  case("survival_b.csv", "soc", c(4, 10, 20),
       c("arm", "arm + strata(stratum)", "arm + stratum")))
write(toJSON(list(generated_by = "tests/reference/survival.R", r_version = R.version.string,
                  survival = as.character(packageVersion("survival")), cases = cases),
             digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"),
      file.path(ref_dir, "survival.json"))
