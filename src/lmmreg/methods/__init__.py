"""Every method of Tables 1-2 and the field's baselines, behind one registry, on the same cached features.

| method             | row                                    | input                        | trains                |
|--------------------|----------------------------------------|------------------------------|-----------------------|
| zero_shot          | (extra) CLIP zero-shot, class prompts  | x = f(I)                     | nothing               |
| zero_shot_lmm      | (extra) zero-shot, LMM centroids       | x = f(I)                     | nothing               |
| linear_probe       | CLIP (image emb.) [1]                  | x = f(I), frozen             | linear head           |
| concat             | CLIP (image & text emb.) [14]          | [x ; mean LMM text emb of I] | linear head           |
| finetune           | Finetuning w/o Reg. (baseline)         | boundary cache               | proj + head, alpha 0  |
| lmm_reg            | LMM-Reg.-CLIP (proposed)               | boundary cache               | proj + head, alpha    |
| prolip             | ProLIP (re-run)                        | boundary cache               | proj, text head fixed |
| gda                | GDA (re-run)                           | x = f(I), frozen             | nothing (statistics)  |
| tip_adapter        | Tip-Adapter (re-run)                   | x = f(I), frozen             | nothing (cache)       |
| tip_adapter_f      | Tip-Adapter-F (re-run)                 | x = f(I), frozen             | cache keys            |
| clip_adapter       | CLIP-Adapter (re-run)                  | x = f(I), frozen             | bottleneck MLP        |
| coop               | CoOp (re-run)                          | x = f(I) + CLIP text tower   | context vectors       |
| linear_probe_lbfgs | CLIP's L-BFGS linear probe (re-run)    | x = f(I), frozen             | logistic regression   |
| lp_pp              | LP++ (re-run)                          | x = f(I), frozen             | W, b, α per class     |
| clap               | CLAP (re-run; no validation set)       | x = f(I), frozen             | class prototypes      |
| cross_modal        | cross-modal linear probe (re-run)      | x = f(I) + class prompts     | linear head           |
| cross_modal_lmm    | cross-modal probe, LMM descriptions    | x = f(I) + descriptions      | linear head           |

The declarations live in `lmmreg.methods.registry` (no torch: plan, report and config read them without loading a
method); `lmmreg.methods.base.run_method` imports a method's module when it runs. Adding a method is adding its
module, its registry line and its test.
"""

from lmmreg.methods.registry import METHODS, MethodEntry, get_method, method_names

__all__ = ["METHODS", "MethodEntry", "get_method", "method_names"]
