/**
 * The EvalAI answer normaliser (`EvalAIAnswerProcessor` of the reference's m4c_evaluator, after
 * the VQA challenge's own): lower case, punctuation dropped or spaced, periods stripped, number
 * words as digits, articles removed, apostrophe-less contractions restored. VQAv2 and VizWiz
 * submissions and TextVQA's soft accuracy all compare answers through it.
 */
import { pySplit, pyStrip } from "../io/python.js";

const CONTRACTIONS: Record<string, string> = {
  aint: "ain't", arent: "aren't", cant: "can't", couldve: "could've", couldnt: "couldn't",
  "couldn'tve": "couldn't've", "couldnt've": "couldn't've", didnt: "didn't", doesnt: "doesn't", dont: "don't",
  hadnt: "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", hasnt: "hasn't", havent: "haven't",
  hed: "he'd", "hed've": "he'd've", "he'dve": "he'd've", hes: "he's", howd: "how'd", howll: "how'll",
  hows: "how's", "Id've": "I'd've", "I'dve": "I'd've", Im: "I'm", Ive: "I've", isnt: "isn't", itd: "it'd",
  "itd've": "it'd've", "it'dve": "it'd've", itll: "it'll", "let's": "let's", maam: "ma'am", mightnt: "mightn't",
  "mightnt've": "mightn't've", "mightn'tve": "mightn't've", mightve: "might've", mustnt: "mustn't",
  mustve: "must've", neednt: "needn't", notve: "not've", oclock: "o'clock", oughtnt: "oughtn't",
  "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", shant: "shan't", "shed've": "she'd've",
  "she'dve": "she'd've", "she's": "she's", shouldve: "should've", shouldnt: "shouldn't",
  "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
  "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", somebodyll: "somebody'll",
  somebodys: "somebody's", someoned: "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
  someonell: "someone'll", someones: "someone's", somethingd: "something'd", "somethingd've": "something'd've",
  "something'dve": "something'd've", somethingll: "something'll", thats: "that's", thered: "there'd",
  "thered've": "there'd've", "there'dve": "there'd've", therere: "there're", theres: "there's", theyd: "they'd",
  "theyd've": "they'd've", "they'dve": "they'd've", theyll: "they'll", theyre: "they're", theyve: "they've",
  twas: "'twas", wasnt: "wasn't", "wed've": "we'd've", "we'dve": "we'd've", weve: "we've", werent: "weren't",
  whatll: "what'll", whatre: "what're", whats: "what's", whatve: "what've", whens: "when's", whered: "where'd",
  wheres: "where's", whereve: "where've", whod: "who'd", "whod've": "who'd've", "who'dve": "who'd've",
  wholl: "who'll", whos: "who's", whove: "who've", whyll: "why'll", whyre: "why're", whys: "why's",
  wont: "won't", wouldve: "would've", wouldnt: "wouldn't", "wouldnt've": "wouldn't've",
  "wouldn'tve": "wouldn't've", yall: "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
  "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", youd: "you'd",
  "youd've": "you'd've", "you'dve": "you'd've", youll: "you'll", youre: "you're", youve: "you've",
};

const NUMBERS: Record<string, string> = {
  none: "0", zero: "0", one: "1", two: "2", three: "3", four: "4", five: "5",
  six: "6", seven: "7", eight: "8", nine: "9", ten: "10",
};

const ARTICLES = new Set(["a", "an", "the"]);

/** Dropped when a space touches one anywhere in the answer, else replaced by a space. */
const PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"];

/**
 * A period not followed by a digit (Python's \d: any decimal digit). The reference passes
 * re.UNICODE where re.sub takes its count, so only the first 32 such periods go.
 */
const PERIOD = /\.(?!\p{Nd})/gu;
const PERIOD_LIMIT = 32;

const own = (table: Record<string, string>, word: string) => (Object.hasOwn(table, word) ? table[word] : undefined);

function tokenize(answer: string): string {
  return pyStrip(answer.toLowerCase().replaceAll(",", "").replaceAll("?", "").replaceAll("'s", " 's"));
}

// The reference also drops all punctuation when a comma sits between digits, but tokenize has
// removed every comma by then, so that rule never fires.
function processPunctuation(text: string): string {
  let out = text;
  for (const p of PUNCTUATION) out = out.replaceAll(p, text.includes(p + " ") || text.includes(" " + p) ? "" : " ");
  let periods = 0;
  return out.replace(PERIOD, (m) => (periods++ < PERIOD_LIMIT ? "" : m));
}

function processDigitsAndArticles(text: string): string {
  const words = pySplit(text.toLowerCase())
    .map((w) => own(NUMBERS, w) ?? w)
    .filter((w) => !ARTICLES.has(w));
  return words.map((w) => own(CONTRACTIONS, w) ?? w).join(" ");
}

/** An answer as EvalAI compares it. */
export function normalizeAnswer(answer: string): string {
  const text = pyStrip(tokenize(answer).replaceAll("\n", " ").replaceAll("\t", " "));
  return processDigitsAndArticles(processPunctuation(text));
}
