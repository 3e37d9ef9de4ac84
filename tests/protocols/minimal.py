"""A small valid protocol used as the starting point of the loader tests."""

MINIMAL = """\
code: TEST-01
title: {en: Test trial, zh: 测试试验}
phase: pilot
therapeutic_area: testing
version: "1"
arms:
  - {code: active, name: {en: Active, zh: 试验组}, ratio: 1}
  - {code: control, name: {en: Control, zh: 对照组}, ratio: 1, is_control: true}
blinding: {level: open}
randomization:
  method: permuted_block
  block_sizes: [2, 4]
  factors:
    - id: sex_factor
      label: {en: Sex}
      field: sex
      levels:
        - {code: m, label: {en: Male}, when: "[sex] = '1'"}
        - {code: f, label: {en: Female}, when: "[sex] = '2'"}
eligibility:
  - id: inc_age
    kind: inclusion
    text: {en: Adult}
    expression: "[age] >= 18"
schedule:
  visits:
    - id: screening
      label: {en: Screening}
      day: -7
      forms: [screening]
    - id: week_4
      label: {en: Week 4}
      day: 28
      forms: [outcome]
forms:
  - id: screening
    title: {en: Screening}
    fields:
      - {id: age, type: integer, label: {en: Age}, min: 0, max: 120}
      - id: sex
        type: single_choice
        label: {en: Sex}
        choices:
          - {code: "1", label: {en: Male}}
          - {code: "2", label: {en: Female}}
  - id: outcome
    title: {en: Outcome}
    fields:
      - {id: score, type: decimal, label: {en: Score}, min: 0, max: 100, decimals: 1}
endpoints:
  - id: score_w4
    name: {en: Score at week 4}
    role: primary
    estimand:
      population: {en: All randomized}
      analysis_set: fas
      variable: {en: Score at week 4}
      summary: {en: Difference in means}
    analysis:
      model: ancova
      outcome_fields: [score]
      visits: [week_4]
      covariates: [age]
      reference_arm: control
sample_size: {n: 100}
"""
