"""The rules of the finding labeler of :mod:`.findings`, as regular expressions compiled once.

Target phrases per finding (keyed by the names of :data:`~.findings.FINDINGS`), the exclusions, the context cues
(negation before and after a mention, uncertainty before and after, pseudo-negations, hypothetical and alternative
mentions), the clause terminators and the sentence ends. Why these rules and not medspacy's ConText defaults is
told in :mod:`.findings`, which reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__: list[str] = []  # the rules are read by the labeler of .findings only

_TARGETS: dict[str, tuple[str, ...]] = {
    "enlarged_cardiomediastinum": (
        r"widen(?:ed|ing)\s+(?:of\s+the\s+)?(?:superior\s+)?mediastin\w*",
        r"mediastin\w*\s+(?:widening|enlargement|prominence)",
        r"(?:prominent|enlarged|widened)\s+(?:superior\s+)?mediastin\w*",
        r"mediastin\w*\s+(?:contours?\s+|silhouette\s+)?(?:is|are|appears?)\s+(?:mildly\s+)?(?:widened|prominent|"
        r"enlarged)",
        r"enlarged\s+cardiomediastinal\s+silhouette",
        r"cardiomediastinal\s+silhouette\s+(?:is\s+|appears\s+)?(?:mildly\s+|moderately\s+)?enlarged",
    ),
    "cardiomegaly": (
        r"cardiomegaly",
        r"cardiac\s+enlargement",
        r"enlarge(?:d|ment\s+of\s+the)\s+(?:cardiac\s+silhouette|heart|cardiac\s+shadow)",
        r"(?:heart|cardiac\s+silhouette|cardiac\s+shadow|heart\s+size|cardiac\s+size)\s+(?:is\s+|appears\s+|"
        r"remains\s+)?(?:again\s+)?(?:mildly\s+|moderately\s+|markedly\s+|slightly\s+|significantly\s+|"
        r"borderline\s+|stably\s+)?(?:enlarged|increased|large)",
        r"(?:mild|moderate|marked|borderline)\s+(?:enlargement\s+of\s+the\s+)?(?:cardiac|heart)\s+"
        r"(?:enlargement|silhouette\s+enlargement|size)",
        r"enlarged\s+heart",
    ),
    "lung_opacity": (
        r"opacit(?:y|ies)",
        r"opacification",
        r"infiltrat(?:e|es|ive)",
        r"air\s*space\s+(?:disease|process|opacit\w*)",
        r"(?:lung|pulmonary|parenchymal|retrocardiac|basilar|bibasilar|basal)\s+densit(?:y|ies)",
        r"densit(?:y|ies)\s+(?:in|at|of|within)\s+the\s+(?:\w+\s+){0,3}(?:lung|lobe|base|apex|lingula)",
        r"haziness",
    ),
    "lung_lesion": (
        r"(?<!calcified\s)nodules?\b",
        r"\bmass(?:es)?\b",
        r"(?:lung|pulmonary|parenchymal|cavitary|cavitating|spiculated)\s+lesions?",
        r"neoplasm\w*|tumou?r|carcinoma|metasta\w*",
    ),
    "edema": (
        r"(?<!subcutaneous\s)edema",
        r"(?:vascular|pulmonary|venous)\s+congestion",
        r"congestive\s+(?:heart\s+)?failure|\bchf\b",
        r"cephalization",
    ),
    "consolidation": (r"consolidat(?:ion|ions|ive|ed)",),
    "pneumonia": (r"pneumonia|pneumonitis",),
    "atelectasis": (
        r"atelectas\w*|atelectatic",
        r"(?:subsegmental|discoid|plate-?like|platelike)\s+(?:atelecta\w*|opacit\w*|scarring)?",
        r"\bcollapse(?:d)?\b",
    ),
    "pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)",),
    "pleural_effusion": (
        r"effusions?",
        r"pleural\s+fluid",
        r"hydropneumothora(?:x|ces)",
        r"blunt(?:ing|ed)\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}costophrenic",
        r"costophrenic\s+(?:angles?|sulc(?:us|i))\s+(?:is\s+|are\s+)?blunt\w*",
    ),
    "pleural_other": (
        r"pleural\s+(?:thickening|scarring|plaques?|calcification)",
        r"(?:thickening|thickened)\s+(?:of\s+the\s+)?(?:\w+\s+){0,2}pleura\w*",
        r"(?:apical\s+)?(?:pleural\s+)?capping",
        r"fibrothorax",
    ),
    "fracture": (r"fractur\w*",),
    "support_devices": (
        r"catheters?|\bpicc\b|central\s+(?:venous\s+)?line|\bport\b|port-?a-?cath|swan|\bij\s+line",
        r"\btubes?\b|\btubing\b|\bshunt\b|\btip\b",
        r"pacemaker|pacer|defibrillator|\baicd\b|\bicd\b|\bleads?\b|generator|stimulator",
        r"(?:surgical\s+)?clips?\b|\bstents?\b|sternotomy\s+wires?|bypass\s+markers|\bwires?\b",
        r"(?:medical\s+)?devices?\b|\bhardware\b|prosthe\w*|arthroplasty|valve\s+replacement|\bsutures?\b",
        r"\banchors?\b|(?:internal\s+)?fixation|\borif\b|\bscrews?\b",
    ),
    "granuloma": (
        r"granulom\w*",
        r"calcified\s+(?:\w+\s+){0,2}nodul\w*",
    ),
    "calcification": (
        r"calci(?:fied|fic)\s+(?:\w+\s+){0,3}(?:lymph|hilar|hilum|suprahilar|perihilar|infrahilar|paratracheal|"
        r"mediastinal|infracarinal|subcarinal|nodes?|nodules?|densit\w*|opacit\w*|foc\w+)",
        r"(?:hilar|hilum|mediastinal|lymph\s+node|nodal|paratracheal|subcarinal|lung|pulmonary|parenchymal|base|"
        r"apex|lobe|granulomatous|scattered)\s+(?:\w+\s+){0,4}calcifications?",
        r"calcifications?\s+(?:\w+\s+){0,2}(?:in|of|within)\s+the\s+(?:\w+\s+){0,2}(?:lung|hil\w+|lobe|base|"
        r"apex|mediastinum|lymph)",
    ),
    "hyperinflation": (
        r"hyper-?(?:inflat|expan|aerat|lucen)\w*",
        r"(?<!subcutaneous\s)emphysema\w*",
        r"\bcopd\b|chronic\s+obstructive",
        r"flatten(?:ed|ing)\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}(?:hemi)?diaphragms?",
        r"(?:hemi)?diaphragms?\s+(?:are\s+|is\s+)?flatten\w*",
        r"increased\s+(?:ap|anteroposterior)\s+diameter",
    ),
    "low_lung_volumes": (
        r"low\s+(?:lung|inspiratory)\s+volumes?",
        r"(?:lung\s+volumes?|inspiratory\s+effort)\s+(?:are|is)\s+(?:\w+\s+){0,1}(?:low|diminished|decreased|reduced)",
        r"hypo-?(?:inflat|ventilat|aerat|expan)\w*",
        r"(?:poor|shallow|suboptimal|limited)\s+(?:inspiration|inspiratory\s+effort)",
    ),
    "degenerative_spine": (
        r"degenerative\s+(?:\w+\s+){0,3}(?:spine|vertebra\w*|thoracic|lumbar|disc|disk|spondylosis|endplate|"
        r"osseous)",
        r"(?:spine|spinal|vertebral|thoracic)\s+(?:\w+\s+){0,2}degenerat\w*",
        r"degenerative\s+(?:changes?|disease)",
        r"spondylo\w*|osteophyt\w*|spurring|\bdjd\b|\bdish\b",
        r"arthriti\w*|arthropath\w*",
    ),
    "spine_curvature": (r"scolio\w*|kyphos\w*|kyphotic|dextrocurvature|levocurvature|curvature",),
    "tortuous_aorta": (
        r"tortu\w*",
        r"unfold\w*\s+(?:of\s+)?(?:the\s+)?(?:thoracic\s+)?aort\w*|aort\w*\s+(?:\w+\s+){0,2}unfold\w*",
        r"ectatic|ectasia",
    ),
    "atherosclerosis": (
        r"atheroscler\w*|atheromatous",
        r"(?:aortic|vascular|arch|knob)\s+(?:\w+\s+){0,1}calcifi\w*",
        r"calcifi\w*\s+(?:\w+\s+){0,3}(?:aort\w*|arch|knob|vessels?|vascular)",
        r"calcified\s+(?:\w+\s+){0,2}aort\w*",
    ),
    "scarring": (r"scar(?:s|ring|red)?\b|cicatri\w*|fibros\w*|fibrotic",),
    "hiatal_hernia": (r"hiatal\s+hernia|hiatus\s+hernia|hernia",),
    "elevated_hemidiaphragm": (
        r"elevat\w*\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}(?:hemi-?)?diaphragm\w*",
        r"(?:hemi-?)?diaphragms?\s+(?:is\s+|are\s+|remains\s+)?(?:\w+\s+){0,1}elevated",
        r"eventration",
    ),
    "interstitial_markings": (
        r"(?:interstitial|bronchovascular|lung|pulmonary|reticular)\s+(?:\w+\s+){0,1}(?:markings|prominence|"
        r"crowding|pattern)",
        r"(?:increased|prominent|coarse|coarsened|accentuated)\s+(?:\w+\s+){0,1}(?:markings|interstitium)",
        r"interstitial\s+(?:thickening|disease|changes?|lung\s+disease)",
    ),
}
"""Target phrases per finding (regular expressions on the lower-case sentence, whole words)."""

_EXCLUDE_SENTENCE = {
    "degenerative_spine": re.compile(
        r"^(?!.*(?:spine|spinal|vertebra|thoracic|lumbar|cervical|disc|disk|endplate)).*(?:shoulder|glenohumeral|"
        r"acromioclavicular|\bac\b|\bhips?\b|joints?|humer|knee|clavic)"
    ),
}
"""Mentions of a finding in a sentence that matches are left out (degenerative changes of a shoulder or a hip are
not the spine's)."""
_EXCLUDE = {"calcification": re.compile(r"aort|vascul|arter|vessel|knob|\barch\b|coronar|valv|granulom")}
"""Mentions of a finding whose matched text also names one of these are left out (vascular calcification is
atherosclerosis; a calcified granuloma is a granuloma)."""

_NEGATION_PRE = (
    r"\bno\b",
    r"\bnot\b",
    r"\bwithout\b",
    r"\bnegative\s+for\b",
    r"\bfree\s+of\b",
    r"\bclear\s+of\b",
    r"\babsence\s+of\b",
    r"\bresolution\s+of\b",
    r"\bresolved\b",
    r"\bremoval\s+of\b",
    r"\brule[sd]?\s+out\b",
    r"\bnor\b",
    r"\bneither\b",
    r"\bnone\b",
)
_NEGATION_POST = (
    r"\b(?:is|are|was|were|has|have|be)\s+(?:\w+\s+){0,1}(?:not|no\s+longer)\s+(?:\w+\s+){0,1}(?:seen|identified|"
    r"present|visualized|evident|appreciated|demonstrated|noted|detected|visible|apparent|enlarged)\b",
    r"\b(?:has|have)\s+(?:\w+\s+){0,2}(?:resolved|cleared|removed)\b",
    r"\b(?:is|are)\s+(?:now\s+)?(?:absent|gone|negative)\b",
    r"\b(?:is|are|appears?)\s+(?:\w+\s+){0,2}(?:normal|within\s+normal\s+limits|unremarkable)\b",
    r"\bresolved\b",
)
_UNCERTAIN_PRE = (
    r"\bpossib(?:le|ly)\b",
    r"\bprobab(?:le|ly)\b",
    r"\bmay\b",
    r"\bmight\b",
    r"\bcould\b",
    r"\bquestionab(?:le|ly)\b",
    r"\bquestion\s+of\b",
    r"\bsuspicious\s+(?:for|of)\b",
    r"\bsuspect(?:ed)?\b",
    r"\bconcern(?:ing)?\s+for\b",
    r"\bsuggest(?:s|ive|ing)?\b",
    r"\bconsistent\s+with\b(?=.*\b(?:or|versus|vs)\b)",
    r"\b(?:differential|ddx)\b",
    r"\bversus\b",
    r"\bvs\.?\b",
    r"\bequivocal\b",
    r"\bindeterminate\b",
    r"\bcannot\s+(?:be\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b",
    r"\bcan\s+not\s+(?:be\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b",
    r"\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)\b",
    r"\bborderline\b",
    r"\bdifficult\s+to\s+exclude\b",
    r"\bmimic\w*\b",
)
_UNCERTAIN_POST = (
    r"\b(?:is|are|be)\s+(?:not\s+)?(?:excluded|ruled\s+out)\b",
    r"\bcannot\s+(?:be\s+)?(?:excluded|ruled\s+out)\b",
    r"\bis\s+(?:possible|suspected|questioned|not\s+excluded)\b",
    r"\bnot\s+(?:entirely\s+)?excluded\b",
)
_PSEUDO = (
    r"\bno\s+(?:significant\s+|interval\s+|definite\s+|appreciable\s+|substantial\s+)?(?:change|increase|"
    r"decrease|progression|worsening|enlargement\s+of\s+the\s+(?:small|known))\b",
    r"\bwithout\s+(?:significant\s+|interval\s+)?(?:change|increase|decrease|progression)\b",
    r"\bnot\s+(?:significantly\s+)?(?:changed|increased|decreased|only)\b",
    r"\bnot\s+well\s+(?:seen|visualized)\b",
    r"\bunchanged\b",
)
_HYPOTHETICAL = (
    r"\bif\b",
    r"\bevaluat\w*\s+(?:for|of)\b",
    r"\bassess\w*\s+for\b",
    r"\bto\s+(?:identify|exclude|evaluate|assess|look\s+for)\b",
    r"\brule-out\b",
    r"\bcorrelat\w*\s+(?:\w+\s+)?(?:with|for)\b",
    r"\bhistory\s+of\b",
    r"\bconsider\w*\b",
    r"\bmay\s+not\s+be\s+(?:demonstrated|seen|visible|detected)\b",
    r"\bwould\s+be\s+a\s+consideration\b",
)
_ALTERNATIVE = (
    r"\bor\b",
    r"\bversus\b",
    r"\bvs\b",
    r"\band/or\b",
    r"\bfavou?r(?:s|ing|ed)\b",
    r"\bcompatible\s+with\b",
)
_TERMINATORS = re.compile(
    r"\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside\s+from\b|\bapart\s+from\b|\bwhich\b|"
    r"\bwhereas\b|\bwith\b|\bwhile\b|\bother\s+than\b|\botherwise\b|\bthere\s+(?:is|are)\b|;|:|\band\s+(?:a|an|the)\b|"
    r"\bremains?\b|\bpersists?\b|\bpersistent\b|\bnow\b"
)
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?!\d)\s*|\n+|;\s*")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_TARGET_RES = {finding: _compile(patterns) for finding, patterns in _TARGETS.items()}
_NEGATION_PRE_RE = _compile(_NEGATION_PRE)
_NEGATION_POST_RE = _compile(_NEGATION_POST)
_UNCERTAIN_PRE_RE = _compile(_UNCERTAIN_PRE)
_UNCERTAIN_POST_RE = _compile(_UNCERTAIN_POST)
_PSEUDO_RE = _compile(_PSEUDO)
_HYPOTHETICAL_RE = _compile(_HYPOTHETICAL)
_ALTERNATIVE_RE = _compile(_ALTERNATIVE)
