# Reference values for analysis/estimators/mmrm.py.
# Run from the repository root: Rscript tests/reference/mmrm.R  (writes tests/reference/mmrm.json)
#
# Fits   nlme::gls(chg ~ arm * visit + base * visit [+ stratum],
#                  correlation = <corStruct>(form = ~ visitnum | subject),
#                  weights = varIdent(form = ~ 1 | visit)   # heterogeneous structures only
#                  method = "REML")
# with   UN = corSymm + varIdent, CS = corCompSymm, CSH = corCompSymm + varIdent,
#        AR1 = corAR1, ARH1 = corAR1 + varIdent,
#        TOEP = corARMA(p = K - 1), TOEPH = corARMA(p = K - 1) + varIdent.
# (On K equally spaced positions a stationary AR(K-1) correlation, parameterised by its
#  K-1 partial autocorrelations in (-1, 1), spans exactly the positive-definite Toeplitz
#  correlation matrices, so corARMA(p = K - 1) is the general Toeplitz structure.)
# LS means and trt-vs-reference differences per visit: emmeans(fit, ~ arm | visit) and
# contrast(..., "trt.vs.ctrl", adjust = "none").
#
# Satterthwaite df: emmeans' "satterthwaite" mode for gls uses nlme's apVar (a coarse
# finite-difference Hessian), so it is stored only as df_emmeans. The reference df is computed
# here independently: the dense REML criterion -2 l_R(theta) is written out directly for
# Sigma(theta) (log-Cholesky for UN; log-variances and raw correlations otherwise), its Hessian
# H at the gls estimate and the gradient g of L'(X'V^-1X)^-1 L are taken with numDeriv
# (Richardson extrapolation), and df = 2 v^2 / (g' (2 H^-1) g). CI and p use that df.
suppressPackageStartupMessages({
  library(nlme); library(emmeans); library(jsonlite); library(numDeriv)
})
emm_options(msg.interaction = FALSE, msg.nesting = FALSE)

ref_dir <- "tests/reference"

sigma_from_theta <- function(theta, structure, K) {
  lag <- abs(outer(1:K, 1:K, "-"))
  hetero <- structure %in% c("CSH", "ARH1", "TOEPH")
  if (structure == "UN") {
    L <- matrix(0, K, K)
    diag(L) <- exp(theta[1:K])
    L[lower.tri(L)] <- theta[-(1:K)]
    return(L %*% t(L))
  }
  if (hetero) { sd <- exp(theta[1:K]); rest <- theta[-(1:K)] }
  else { sd <- rep(exp(theta[1] / 2), K); rest <- theta[-1] }
  R <- switch(structure,
    CS = , CSH = ifelse(lag == 0, 1, rest[1]),
    AR1 = , ARH1 = rest[1]^lag,
    TOEP = , TOEPH = matrix(c(1, rest)[lag + 1], K, K))
  R * outer(sd, sd)
}

theta_from_sigma <- function(S, structure) {
  K <- nrow(S)
  if (structure == "UN") {
    L <- t(chol(S))
    return(c(log(diag(L)), L[lower.tri(L)]))
  }
  hetero <- structure %in% c("CSH", "ARH1", "TOEPH")
  R <- cov2cor(S)
  scale <- if (hetero) log(sqrt(diag(S))) else log(S[1, 1])
  rest <- switch(structure,
    CS = , CSH = R[1, 2], AR1 = , ARH1 = R[1, 2], TOEP = , TOEPH = R[1, 2:K])
  c(scale, rest)
}

reml_pieces <- function(S, blocks) {
  p <- ncol(blocks[[1]]$X)
  A <- matrix(0, p, p); b <- rep(0, p); cc <- 0; logdet <- 0
  for (blk in blocks) {
    W <- solve(S[blk$vis, blk$vis, drop = FALSE])
    m <- blk$m
    Wbig <- kronecker(diag(m), W)
    A <- A + t(blk$X) %*% Wbig %*% blk$X
    b <- b + t(blk$X) %*% Wbig %*% blk$y
    cc <- cc + as.numeric(t(blk$y) %*% Wbig %*% blk$y)
    logdet <- logdet + m * as.numeric(determinant(S[blk$vis, blk$vis, drop = FALSE])$modulus)
  }
  list(A = A, b = b, cc = cc, logdet = logdet)
}

make_blocks <- function(d, X) {
  key <- tapply(d$visitnum, d$subject, function(v) paste(sort(v), collapse = ","))
  d$pattern <- key[as.character(d$subject)]
  lapply(split(seq_len(nrow(d)), d$pattern), function(rows) {
    rows <- rows[order(d$subject[rows], d$visitnum[rows])]
    vis <- sort(unique(d$visitnum[rows]))
    list(X = X[rows, , drop = FALSE], y = d$chg[rows], vis = vis,
         m = length(unique(d$subject[rows])))
  })
}

# Kenward-Roger, linear parameterisation (eta = entries of Sigma for UN, (common covariance,
# extra variance) for CS, lag covariances for TOEP): R_ij = 0. W = 2 H^-1 with H the
# numDeriv Hessian of -2 l_R in eta (inverse observed information, as R package mmrm and
# SAS); Phi_A = Phi + 2 Phi {sum_ij W_ij (Q_ij - P_i Phi P_j)} Phi; one-row df = 2 / a'Wa.
linear_basis <- function(structure, K) {
  lag <- abs(outer(1:K, 1:K, "-"))
  if (structure == "UN") {
    out <- list()
    for (j in 1:K) for (m in j:K) {
      B <- matrix(0, K, K); B[j, m] <- 1; B[m, j] <- 1; out[[length(out) + 1]] <- B
    }
    return(out)
  }
  if (structure == "CS") return(list(matrix(1, K, K), diag(K)))
  lapply(0:(K - 1), function(h) (lag == h) * 1)
}

kenward_roger <- function(S, structure, blocks, Lmat) {
  K <- nrow(S)
  basis <- linear_basis(structure, K)
  eta_hat <- switch(structure,
    UN = unlist(lapply(1:K, function(j) S[j, j:K])),
    CS = c(S[1, 2], S[1, 1] - S[1, 2]),
    TOEP = S[1, ])
  sigma_eta <- function(eta) Reduce(`+`, Map(`*`, eta, basis))
  stopifnot(max(abs(sigma_eta(eta_hat) - S)) < 1e-10 * max(abs(S)))
  dev_eta <- function(eta) {
    pc <- reml_pieces(sigma_eta(eta), blocks)
    beta <- solve(pc$A, pc$b)
    pc$logdet + as.numeric(determinant(pc$A)$modulus) + pc$cc - sum(pc$b * beta)
  }
  W <- 2 * solve(numDeriv::hessian(dev_eta, eta_hat))
  q <- length(basis)
  p <- ncol(blocks[[1]]$X)
  Phi <- solve(reml_pieces(S, blocks)$A)
  P <- lapply(1:q, function(i) matrix(0, p, p))
  Lam <- matrix(0, p, p)
  for (blk in blocks) {
    Wp <- solve(S[blk$vis, blk$vis, drop = FALSE])
    I_m <- diag(blk$m)
    WB <- lapply(basis, function(B) Wp %*% B[blk$vis, blk$vis, drop = FALSE])
    for (i in 1:q) {
      P[[i]] <- P[[i]] - t(blk$X) %*% kronecker(I_m, WB[[i]] %*% Wp) %*% blk$X
      for (j in 1:q) {
        Lam <- Lam + W[i, j] * t(blk$X) %*% kronecker(I_m, WB[[i]] %*% WB[[j]] %*% Wp) %*% blk$X
      }
    }
  }
  for (i in 1:q) for (j in 1:q) Lam <- Lam - W[i, j] * P[[i]] %*% Phi %*% P[[j]]
  PhiA <- Phi + 2 * Phi %*% Lam %*% Phi
  se <- sqrt(diag(Lmat %*% PhiA %*% t(Lmat)))
  df <- apply(Lmat, 1, function(l) {
    v <- as.numeric(t(l) %*% Phi %*% l)
    a <- sapply(P, function(Pi) as.numeric(t(l) %*% Phi %*% Pi %*% Phi %*% l)) / v
    2 / as.numeric(t(a) %*% W %*% a)
  })
  list(se = se, df = df)
}

fit_case <- function(file, structure, reference, strata = FALSE) {
  d <- read.csv(file.path(ref_dir, "data", file), stringsAsFactors = FALSE)
  d <- d[!is.na(d$chg), ]
  arms <- c(reference, sort(setdiff(unique(d$arm), reference)))
  d$arm <- factor(d$arm, levels = arms)
  d$visit <- factor(d$visit, levels = sort(unique(d$visit)))
  d$subject <- factor(d$subject)
  K <- nlevels(d$visit)
  fml <- if (strata) chg ~ arm * visit + base * visit + stratum else chg ~ arm * visit + base * visit
  cor_struct <- switch(structure,
    UN = corSymm(form = ~ visitnum | subject),
    CS = , CSH = corCompSymm(form = ~ visitnum | subject),
    AR1 = , ARH1 = corAR1(form = ~ visitnum | subject),
    TOEP = , TOEPH = corARMA(form = ~ visitnum | subject, p = K - 1))
  hetero <- structure %in% c("UN", "CSH", "ARH1", "TOEPH")
  ctrl <- glsControl(tolerance = 1e-10, msTol = 1e-12, maxIter = 500, msMaxIter = 500)
  fit <- if (hetero) {
    eval(bquote(gls(.(fml), data = d, correlation = .(cor_struct),
                    weights = varIdent(form = ~ 1 | visit), method = "REML", control = ctrl)))
  } else {
    eval(bquote(gls(.(fml), data = d, correlation = .(cor_struct), method = "REML",
                    control = ctrl)))
  }
  complete <- names(which(table(d$subject) == K))[1]
  S <- unclass(getVarCov(fit, individual = complete))
  S <- matrix(as.numeric(S), K, K)
  X <- model.matrix(fml, d)
  stopifnot(all(colnames(X) == names(coef(fit))))
  blocks <- make_blocks(d, X)
  str_name <- if (structure == "UN") "UN" else structure
  theta_hat <- theta_from_sigma(S, str_name)
  dev <- function(theta) {
    Sg <- sigma_from_theta(theta, str_name, K)
    pc <- reml_pieces(Sg, blocks)
    beta <- solve(pc$A, pc$b)
    pc$logdet + as.numeric(determinant(pc$A)$modulus) + pc$cc - sum(pc$b * beta) +
      (nrow(X) - ncol(X)) * log(2 * pi)
  }
  pc <- reml_pieces(S, blocks)
  beta_dense <- solve(pc$A, pc$b)
  stopifnot(max(abs(beta_dense - coef(fit))) < 1e-6 * max(1, max(abs(coef(fit)))))
  H <- numDeriv::hessian(dev, theta_hat)
  theta_cov <- 2 * solve(H)
  grad_dev <- numDeriv::grad(dev, theta_hat)

  emm <- emmeans(fit, ~ arm | visit, mode = "df.error", data = d)
  con <- contrast(emm, method = "trt.vs.ctrl", ref = 1, adjust = "none")
  satt_df <- function(Lmat) {
    vfun <- function(theta) {
      Sg <- sigma_from_theta(theta, str_name, K)
      Ainv <- solve(reml_pieces(Sg, blocks)$A)
      diag(Lmat %*% Ainv %*% t(Lmat))
    }
    v <- vfun(theta_hat)
    G <- numDeriv::jacobian(vfun, theta_hat)
    list(v = v, df = 2 * v^2 / rowSums((G %*% theta_cov) * G))
  }
  emm_s <- tryCatch(summary(emmeans(fit, ~ arm | visit, mode = "satterthwaite", data = d)),
                    error = function(e) NULL)
  con_s <- tryCatch(summary(contrast(emmeans(fit, ~ arm | visit, mode = "satterthwaite",
                                             data = d),
                                     method = "trt.vs.ctrl", ref = 1, adjust = "none")),
                    error = function(e) NULL)
  ls <- summary(emm)
  ls_df <- satt_df(emm@linfct)
  cs <- summary(con)
  con_df <- satt_df(con@linfct)
  tcrit <- qt(0.975, con_df$df)
  lsmeans <- data.frame(arm = as.character(ls$arm), visit = as.character(ls$visit),
                        estimate = ls$emmean, se = ls$SE, se_dense = sqrt(ls_df$v),
                        df = ls_df$df,
                        df_emmeans = if (is.null(emm_s)) NA else emm_s$df)
  contrasts <- data.frame(contrast = gsub(" ", " ", as.character(cs$contrast)),
                          visit = as.character(cs$visit), estimate = cs$estimate, se = cs$SE,
                          df = con_df$df, ci_low = cs$estimate - tcrit * cs$SE,
                          ci_high = cs$estimate + tcrit * cs$SE,
                          p_value = 2 * pt(-abs(cs$estimate / cs$SE), con_df$df),
                          df_emmeans = if (is.null(con_s)) NA else con_s$df)
  if (structure %in% c("UN", "CS", "TOEP")) {
    kr_ls <- kenward_roger(S, structure, blocks, emm@linfct)
    kr_con <- kenward_roger(S, structure, blocks, con@linfct)
    lsmeans$kr_se <- kr_ls$se; lsmeans$kr_df <- kr_ls$df
    contrasts$kr_se <- kr_con$se; contrasts$kr_df <- kr_con$df
    kr_t <- qt(0.975, kr_con$df)
    contrasts$kr_ci_low <- cs$estimate - kr_t * kr_con$se
    contrasts$kr_ci_high <- cs$estimate + kr_t * kr_con$se
    contrasts$kr_p_value <- 2 * pt(-abs(cs$estimate / kr_con$se), kr_con$df)
  }
  list(
    file = file, structure = structure, reference = reference, strata = strata,
    r_call = paste(deparse(fit$call, width.cutoff = 500L), collapse = " "),
    minus2_reml = dev(theta_hat), logLik_nlme = as.numeric(logLik(fit)),
    max_abs_grad = max(abs(grad_dev)),
    sigma = S, beta = unname(coef(fit)), beta_names = names(coef(fit)),
    lsmeans = lsmeans, contrasts = contrasts
  )
}

cases <- list(
  fit_case("mmrm_a.csv", "UN", "control", strata = TRUE),
  fit_case("mmrm_a.csv", "UN", "control"),
  fit_case("mmrm_a.csv", "CS", "control"),
  fit_case("mmrm_a.csv", "CSH", "control"),
  fit_case("mmrm_a.csv", "AR1", "control"),
  fit_case("mmrm_a.csv", "ARH1", "control"),
  fit_case("mmrm_a.csv", "TOEP", "control"),
  fit_case("mmrm_a.csv", "TOEPH", "control"),
  fit_case("mmrm_b.csv", "UN", "placebo"),
  fit_case("mmrm_b.csv", "ARH1", "placebo"),
  fit_case("mmrm_b.csv", "TOEPH", "placebo")
)
out <- list(generated_by = "tests/reference/mmrm.R", r_version = R.version.string,
            nlme = as.character(packageVersion("nlme")),
            emmeans = as.character(packageVersion("emmeans")), cases = cases)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, matrix = "rowmajor",
             na = "null"),
      file.path(ref_dir, "mmrm.json"))
