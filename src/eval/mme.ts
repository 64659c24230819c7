/**
 * MME's answer files, shared by `convert_answer_to_mme` (which writes them) and `calculation`
 * (which scores them): one line per question, `image file\tquestion\tground truth\tanswer`,
 * the two questions of an image on consecutive lines.
 */

/** The subtasks `calculation` scores, by the total they count towards, in its printing order. */
export const MME_TASKS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["Perception", ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"]],
  ["Cognition", ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]],
];

/** One answer line of a subtask's file. */
export const mmeLine = (file: string, question: string, truth: string, answer: string): string => `${[file, question, truth, answer].join("\t")}\n`;
