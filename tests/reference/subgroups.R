# Reference values for analysis/subgroups.py.
# Run from the repository root: Rscript tests/reference/subgroups.R  (writes tests/reference/subgroups.json)
#   ANCOVA:   fit <- lm(chg ~ arm * <subgroup> + <covariates>); contrast(emmeans(fit, ~ arm | <subgroup>),
#             "trt.vs.ctrl", adjust = "none"); anova(lm(chg ~ arm + <subgroup> + ...), fit)  (F test)
#   logistic: fit <- glm(resp ~ arm * sex + base + stratum, binomial); same emmeans contrast on the
#             link scale (log odds ratio); anova(reduced, fit, test = "LRT")
suppressPackageStartupMessages({library(emmeans); library(jsonlite)})
emm_options(msg.interaction = FALSE)
ref_dir <- "tests/reference"

case <- function(file, outcome, reference, subgroup, covs, family) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  d <- d[!is.na(d[[outcome]]), ]
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  rhs_full <- paste(c(paste("arm *", subgroup), covs), collapse = " + ")
  rhs_red <- paste(c("arm", subgroup, covs), collapse = " + ")
  full_f <- as.formula(paste(outcome, "~", rhs_full))
  red_f <- as.formula(paste(outcome, "~", rhs_red))
  if (family == "gaussian") {
    full <- lm(full_f, data = d); red <- lm(red_f, data = d)
    a <- anova(red, full)
    inter <- list(statistic = a$F[2], p_value = a$`Pr(>F)`[2], df = a$Df[2])
  } else {
    full <- glm(full_f, data = d, family = binomial); red <- glm(red_f, data = d, family = binomial)
    a <- anova(red, full, test = "LRT")
    inter <- list(statistic = a$Deviance[2], p_value = a$`Pr(>Chi)`[2], df = a$Df[2])
  }
  emm <- emmeans(full, as.formula(paste("~ arm |", subgroup)))
  con <- summary(contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none"), infer = TRUE,
                 adjust = "none")
  list(file = file, outcome = outcome, reference = reference, subgroup = subgroup,
       covariates = covs, family = family, r_call = deparse(full_f),
       effects = data.frame(level = as.character(con[[subgroup]]),
                            contrast = as.character(con$contrast), estimate = con$estimate,
                            se = con$SE, ci_low = if (family == "gaussian") con$lower.CL else con$asymp.LCL,
                            ci_high = if (family == "gaussian") con$upper.CL else con$asymp.UCL,
                            p_value = con$p.value),
       interaction = inter)
}
cases <- list(
  case("ancova_a.csv", "chg", "control", "sex", c("base", "stratum"), "gaussian"),
  case("ancova_b.csv", "chg", "placebo", "severity", c("base", "region"), "gaussian"),
  case("binary_a.csv", "resp", "control", "sex", c("base", "stratum"), "binomial"))
write(toJSON(list(generated_by = "tests/reference/subgroups.R", r_version = R.version.string,
                  cases = cases), digits = NA, auto_unbox = TRUE, pretty = TRUE),
      file.path(ref_dir, "subgroups.json"))
