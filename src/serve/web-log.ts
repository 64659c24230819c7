/**
 * The web UI's conversation log in the reference's layout: one JSON line per finished answer or
 * vote appended to `{logDir}/{YYYY-MM-DD}-conv.json`, and each image of a conversation saved once
 * as `{logDir}/serve_images/{YYYY-MM-DD}/{md5}.jpg` (dates in local time, as Python's
 * datetime.now()).
 */
import { appendFile, mkdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { RgbImage } from "../image/decode.js";
import type { ConversationDict } from "../llava/conversation.js";
import { dumpJson, fromJs, pyFloat, pyRound } from "../io/python.js";
import { encodeJpeg, imageMd5 } from "./web-image.js";

export type VoteType = "upvote" | "downvote" | "flag";
export const VOTE_TYPES: readonly VoteType[] = ["upvote", "downvote", "flag"];

export interface ChatRecord {
  model: string;
  /** seconds since the epoch, as time.time() */
  start: number;
  finish: number;
  state: ConversationDict;
  images: string[];
  ip: string;
}

export interface VoteRecord {
  type: VoteType;
  model: string;
  state: ConversationDict;
  ip: string;
}

const day = (t: Date) => `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, "0")}-${String(t.getDate()).padStart(2, "0")}`;

/** round(x, 4), always a float in the JSON as Python writes it. */
const timestamp = (seconds: number) => pyFloat(pyRound(seconds, 4));

export class ConversationLog {
  constructor(readonly dir: string) {}

  /** The file the lines of `now`'s day go to (the reference's get_conv_log_filename). */
  fileFor(now = new Date()): string {
    return path.join(this.dir, `${day(now)}-conv.json`);
  }

  /** Saves an image unless that day's folder holds it already; returns its md5. */
  async saveImage(img: RgbImage, now = new Date()): Promise<string> {
    const md5 = imageMd5(img);
    const file = path.join(this.dir, "serve_images", day(now), `${md5}.jpg`);
    if (!(await exists(file))) {
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, await encodeJpeg(img));
    }
    return md5;
  }

  async chat(r: ChatRecord): Promise<void> {
    const finish = timestamp(r.finish);
    await this.append(new Map([
      ["tstamp", finish], ["type", "chat"], ["model", r.model], ["start", timestamp(r.start)], ["finish", finish],
      ["state", fromJs(r.state)], ["images", r.images], ["ip", r.ip],
    ]));
  }

  async vote(r: VoteRecord): Promise<void> {
    await this.append(new Map([
      ["tstamp", timestamp(Date.now() / 1000)], ["type", r.type], ["model", r.model], ["state", fromJs(r.state)], ["ip", r.ip],
    ]));
  }

  private async append(line: Parameters<typeof dumpJson>[0]): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await appendFile(this.fileFor(), dumpJson(line) + "\n");
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
