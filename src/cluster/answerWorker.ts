// The worker thread of answers.ts: answers each request's sequences and posts them back under its id.
import { parentPort } from 'node:worker_threads';
import { answerAll, type AnswerReply, type AnswerRequest } from './answers';

parentPort?.on('message', ({ id, jobs }: AnswerRequest) => {
  let reply: AnswerReply;
  try {
    reply = { id, results: answerAll(jobs) };
  } catch (err) {
    reply = { id, error: (err as Error).message };
  }
  parentPort!.postMessage(reply);
});
// Loaded: answers.ts sends it work from now on.
parentPort?.postMessage({ ready: true } satisfies AnswerReply);
