# Reference values for analysis/estimators/binary.py.
# Run from the repository root: Rscript tests/reference/binary.R  (writes tests/reference/binary.json)
#   logistic: glm(resp ~ arm + base + stratum, family = binomial); Wald CI = confint.default;
#     profile-likelihood CI solved exactly: uniroot over b of
#     deviance(glm(resp ~ <covariates>, offset = b * (arm == trt))) - deviance(fit) = qchisq(.95, 1)
#     (confint(fit), which interpolates a profile grid, is stored as confint_glm_* for information)
#   proportions: Wilson intervals from prop.test(x, n, correct = FALSE)$conf.int combined into
#     Newcombe's hybrid score interval (method 10) here; fisher.test; chisq.test(correct = FALSE)
#   CMH: mantelhaen.test(table(arm, resp, stratum), correct = FALSE / TRUE)
#   MH risk difference with Sato's variance: no base-R function; written out below from
#     Sato (1989, Biometrics 45:1323) so the Python code is checked against an independent transcription.
suppressPackageStartupMessages(library(jsonlite))
ref_dir <- "tests/reference"

case <- function(file, reference, covs) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  fml <- as.formula(paste("resp ~", paste(c("arm", covs), collapse = " + ")))
  fit <- glm(fml, data = d, family = binomial)
  co <- summary(fit)$coefficients
  ci <- confint.default(fit)
  trt <- arms[2]
  nm <- paste0("arm", trt)
  # profile likelihood: deviance with the arm coefficient fixed (offset), solved by uniroot
  tight <- glm.control(epsilon = 1e-14, maxit = 100)
  fit_t <- glm(fml, data = d, family = binomial, control = tight)
  red_rhs <- if (length(covs)) paste(covs, collapse = " + ") else "1"
  is_trt <- as.numeric(d$arm == trt)
  prof_dev <- function(b) {
    deviance(glm(as.formula(paste("resp ~", red_rhs)), data = d, family = binomial,
                 offset = b * is_trt, control = tight))
  }
  crit <- qchisq(0.95, 1)
  b_hat <- coef(fit_t)[nm]; se_hat <- sqrt(vcov(fit_t)[nm, nm])
  f <- function(b) prof_dev(b) - deviance(fit_t) - crit
  lo <- uniroot(f, c(b_hat - 10 * se_hat, b_hat), tol = 1e-13)$root
  hi <- uniroot(f, c(b_hat, b_hat + 10 * se_hat), tol = 1e-13)$root
  mass_ci <- suppressMessages(confint(fit))
  logistic <- list(formula = deparse(fml), log_or = co[nm, 1], se = co[nm, 2],
                   or = exp(co[nm, 1]), ci_low = exp(ci[nm, 1]), ci_high = exp(ci[nm, 2]),
                   p_value = co[nm, 4], deviance = deviance(fit),
                   profile_low = exp(lo), profile_high = exp(hi),
                   lrt_p = pchisq(prof_dev(0) - deviance(fit_t), 1, lower.tail = FALSE),
                   confint_glm_low = exp(mass_ci[nm, 1]), confint_glm_high = exp(mass_ci[nm, 2]))
  x1 <- sum(d$resp[d$arm == trt]); n1 <- sum(d$arm == trt)
  x2 <- sum(d$resp[d$arm == reference]); n2 <- sum(d$arm == reference)
  p1 <- x1 / n1; p2 <- x2 / n2
  w1 <- prop.test(x1, n1, correct = FALSE)$conf.int
  w2 <- prop.test(x2, n2, correct = FALSE)$conf.int
  se <- sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
  tab <- table(d$arm, d$resp)
  chi <- chisq.test(tab, correct = FALSE)
  prop <- list(rd = p1 - p2, wald_se = se, wald_low = p1 - p2 - qnorm(0.975) * se,
               wald_high = p1 - p2 + qnorm(0.975) * se,
               wald_p = 2 * pnorm(-abs((p1 - p2) / se)),
               newcombe_low = p1 - p2 - sqrt((p1 - w1[1])^2 + (w2[2] - p2)^2),
               newcombe_high = p1 - p2 + sqrt((w1[2] - p1)^2 + (p2 - w2[1])^2),
               fisher_p = fisher.test(tab)$p.value, chisq = unname(chi$statistic),
               chisq_p = chi$p.value)
  d$resp_f <- factor(d$resp, levels = c(0, 1))
  t3 <- table(d$arm, d$resp_f, d$stratum)
  mh <- mantelhaen.test(t3, correct = FALSE)
  mhc <- mantelhaen.test(t3, correct = TRUE)
  # Sato MH risk difference: a = treated responders, c = reference responders
  a <- t3[2, 2, ]; b <- t3[2, 1, ]; c <- t3[1, 2, ]; dd <- t3[1, 1, ]
  n1k <- a + b; n0k <- c + dd; N <- n1k + n0k
  w <- n1k * n0k / N
  rd <- sum(w * (a / n1k - c / n0k)) / sum(w)
  P <- (n1k^2 * c - n0k^2 * a + n1k * n0k * (n0k - n1k) / 2) / N^2
  Q <- (a * (n0k - c) + c * (n1k - a)) / (2 * N)
  var_rd <- (rd * sum(P) + sum(Q)) / sum(w)^2
  cmh <- list(statistic = unname(mh$statistic), p_value = mh$p.value,
              statistic_corrected = unname(mhc$statistic), p_value_corrected = mhc$p.value,
              or = unname(mh$estimate), ci_low = mh$conf.int[1], ci_high = mh$conf.int[2],
              rd = rd, rd_se = sqrt(var_rd))
  list(file = file, reference = reference, treatment = trt, covariates = covs,
       logistic = logistic, proportions = prop, cmh = cmh)
}

cases <- list(case("binary_a.csv", "control", c("base", "stratum")),
              case("binary_b.csv", "placebo", character(0)),
              case("binary_b.csv", "placebo", c("base", "stratum")))
write(toJSON(list(generated_by = "tests/reference/binary.R", r_version = R.version.string,
                  cases = cases), digits = NA, auto_unbox = TRUE, pretty = TRUE),
      file.path(ref_dir, "binary.json"))
