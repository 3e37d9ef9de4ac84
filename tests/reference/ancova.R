# Reference values for analysis/estimators/ancova.py.
# Run from the repository root: Rscript tests/reference/ancova.R  (writes tests/reference/ancova.json)
#   fit <- lm(chg ~ arm + <covariates> + <strata>, data)   (rows with NA dropped by lm)
#   emmeans(fit, ~ arm)                                     (equal weights over factor levels)
#   contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none") with confint(adjust = "none")
#   drop1(fit, test = "F")["arm", ]                         (F test of no arm effect)
suppressPackageStartupMessages({library(emmeans); library(jsonlite)})
ref_dir <- "tests/reference"

case <- function(file, reference, covariates, strata) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  fml <- as.formula(paste("chg ~", paste(c("arm", covariates, strata), collapse = " + ")))
  fit <- lm(fml, data = d)
  emm <- emmeans(fit, ~ arm)
  ls <- summary(emm, infer = TRUE)
  con <- summary(contrast(emm, method = "trt.vs.ctrl", ref = 1, adjust = "none"),
                 infer = TRUE, adjust = "none")
  f <- drop1(fit, test = "F")
  list(file = file, reference = reference, covariates = covariates, strata = strata,
       r_call = deparse(fml),
       lsmeans = data.frame(arm = as.character(ls$arm), estimate = ls$emmean, se = ls$SE,
                            df = ls$df, ci_low = ls$lower.CL, ci_high = ls$upper.CL),
       contrasts = data.frame(contrast = as.character(con$contrast), estimate = con$estimate,
                              se = con$SE, df = con$df, ci_low = con$lower.CL,
                              ci_high = con$upper.CL, p_value = con$p.value),
       f_arm = f["arm", "F value"], f_arm_p = f["arm", "Pr(>F)"], f_arm_df = f["arm", "Df"],
       sigma = summary(fit)$sigma)
}

cases <- list(case("ancova_a.csv", "control", c("base", "age"), "stratum"),
              case("ancova_a.csv", "control", character(0), character(0)),
              case("ancova_b.csv", "placebo", "base", c("region", "severity")))
write(toJSON(list(generated_by = "tests/reference/ancova.R", r_version = R.version.string,
                  emmeans = as.character(packageVersion("emmeans")), cases = cases),
             digits = NA, auto_unbox = TRUE, pretty = TRUE),
      file.path(ref_dir, "ancova.json"))
