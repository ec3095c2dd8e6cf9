"""
A fake OpenAI-compatible chat server on 127.0.0.1, for tests, the benchmark and offline dry runs.

    python prompting/fake_llm_server.py --port 8000 --language hindi --delay 0.2
    python prompting/make_requests.py generate --base_url http://127.0.0.1:8000/v1 --model fake ...

POST /v1/chat/completions answers, after --delay seconds, with a canned children's story in
--language together with judge scores, so all three make_requests modes work against it:
    {"story": "...", "context awareness": 7, "completeness": 8, ...}
The scores are those a judge prompt asks for — the keys of the JSON form it ends with, {"grammar": <score>, ...},
so every rubric of make_requests.py evaluate gets its own fields — and without such a form the seed rubric's six.
They are FAKE: the seed's six have fixed canned values (CANNED_SCORES) and any other field a fixed value of its
name (canned_score). A prompt that asks for a "summary" too (generate --with_summary) gets the story's first
sentence as its summary.

--stories CORPUS (e.g. data/demo/hindi.jsonl.gz) makes it answer like a real LLM on the whole pipeline: a story
prompt whose noun, verb, adjective and ending are those of a corpus record gets that record's story (so a run of
generate over generate_prompts.py's prompts yields the demo corpus itself, a different story per prompt), and
every reply's judge scores are computed from the prompt's text — deterministic, and FAKE: they measure word
variety and length, not quality (see fake_scores), for whichever fields the prompt asks for.

Failure modes, to watch the retries at work:
    --error_rate 0.1     answer HTTP 500 to that fraction of requests
    --script FILE        JSON {"text in a prompt": ["429", "hang", "ok"], ...}: the requests whose
                         prompt contains the text get these answers in turn, then "ok" for ever.
Script steps:
    "ok"                 the canned reply
    "429", "500", ...    that HTTP status with a JSON error body ("429" also sends Retry-After: 0)
    "hang"               never answer: the client's timeout has to fire
    "length"             a completion cut off at the token limit (finish_reason "length")
    "body:TEXT"          HTTP 200 whose raw body is TEXT, not a chat completion
    "http:STATUS:TEXT"   that HTTP status with the raw body TEXT (e.g. a 401 that echoes the key)
    "reply:TEXT"         a proper chat completion whose message is TEXT (e.g. malformed JSON)
    "nested:N"           a chat completion whose message is N "[" (JSON nested N deep)
    "huge:N"             a chat completion of N bytes, sent in 64 KB chunks without a Content-Length, so a
                         client can only stop it by counting (server.huge_bytes_sent: what each one got out)
"""
import argparse
import asyncio
import json
import random
import re
import sys
import threading
import zlib

from aiohttp import web

from regional_tinystories.cli import rename_deprecated_options, underscored

CANNED_STORIES = {
    "english": (
        "Mina found a small red kite under the old mango tree. Its tail was torn. \"Can we fix it?\" "
        "she asked her brother Ravi. Ravi smiled and brought some string and paper. Together they tied "
        "a new tail, long and bright.\n\nThe next morning the wind was strong. The kite flew high over "
        "the houses, and the birds flew beside it. Mina laughed and waved at the sky. \"It flies because "
        "we helped it,\" Ravi said. That night Mina dreamed that she could fly too."),
    "hindi": (
        "मीना को पुराने आम के पेड़ के नीचे एक छोटी लाल पतंग मिली। उसकी पूँछ फटी हुई थी। \"क्या हम इसे "
        "ठीक कर सकते हैं?\" उसने अपने भाई रवि से पूछा। रवि मुस्कुराया और धागा और कागज़ ले आया। दोनों ने "
        "मिलकर एक नई, लंबी और चमकीली पूँछ बाँधी।\n\nअगली सुबह तेज़ हवा चल रही थी। पतंग घरों के ऊपर ऊँची "
        "उड़ी, और चिड़ियाँ उसके साथ उड़ीं। मीना हँसी और उसने आसमान की ओर हाथ हिलाया। \"यह इसलिए उड़ रही "
        "है क्योंकि हमने इसकी मदद की,\" रवि ने कहा। उस रात मीना ने भी उड़ने का सपना देखा।"),
    "marathi": (
        "मीनाला जुन्या आंब्याच्या झाडाखाली एक छोटा लाल पतंग सापडला. त्याची शेपटी फाटलेली होती. \"आपण "
        "हा दुरुस्त करू शकतो का?\" तिने तिच्या भावाला, रवीला विचारले. रवी हसला आणि दोरा व कागद घेऊन "
        "आला. दोघांनी मिळून एक नवी, लांब आणि चमकदार शेपटी बांधली.\n\nदुसऱ्या दिवशी सकाळी जोरात वारा "
        "वाहत होता. पतंग घरांच्या वर उंच उडाला, आणि पक्षी त्याच्यासोबत उडाले. मीना हसली आणि तिने "
        "आकाशाकडे हात हलवला. \"आपण मदत केली म्हणून तो उडतो आहे,\" रवी म्हणाला. त्या रात्री मीनाने "
        "सुद्धा उडण्याचे स्वप्न पाहिले."),
    "bangla": (
        "মীনা পুরনো আম গাছের নিচে একটা ছোট লাল ঘুড়ি খুঁজে পেল। ঘুড়িটার লেজ ছেঁড়া ছিল। \"আমরা কি এটা "
        "সারাতে পারি?\" সে তার ভাই রবিকে জিজ্ঞেস করল। রবি হাসল আর সুতো ও কাগজ নিয়ে এল। দুজনে মিলে "
        "একটা নতুন, লম্বা আর উজ্জ্বল লেজ বাঁধল।\n\nপরের দিন সকালে জোরে হাওয়া বইছিল। ঘুড়িটা বাড়িগুলোর "
        "উপর দিয়ে অনেক উঁচুতে উড়ল, আর পাখিরা তার পাশে পাশে উড়ল। মীনা হাসল আর আকাশের দিকে হাত নাড়ল। "
        "\"আমরা সাহায্য করেছি বলেই ও উড়ছে,\" রবি বলল। সেই রাতে মীনাও উড়ে বেড়ানোর স্বপ্ন দেখল।"),
}
CANNED_SCORES = {"context awareness": 7, "completeness": 8, "grammar": 8, "fluency": 7, "creativity": 6,
                 "overall": 7}
# A score in the JSON form a judge prompt asks for (regional_tinystories.templates.score_reply_format).
REQUESTED_SCORE = re.compile(r'"([^"\n]+)": <score>')
SENTENCE = re.compile(r"\s*(.+?[.!?।॥])(?=\s|$)", re.S)


def requested_scores(prompt):
    """The score names a judge prompt asks for ("plot", "instruction following"), in its order; the seed rubric's
    six for a prompt that asks for none (every reply carries scores, a story prompt's too)."""
    return REQUESTED_SCORE.findall(prompt) or list(CANNED_SCORES)


def asks_for_summary(prompt):
    return '"summary":' in prompt  # generate --with_summary's reply form: {"story": "...", "summary": "..."}


def first_sentence(story):
    match = SENTENCE.match(story)
    return match[1] if match else story.strip()


def canned_score(name):
    """A FAKE score: the seed rubric's canned value, else a fixed value from 5 to 8 of the score's name."""
    return CANNED_SCORES.get(name, 5 + zlib.crc32(name.encode()) % 4)


def check_script(script):
    """ValueError unless script maps prompt texts to lists of valid steps."""
    if not isinstance(script, dict):
        raise ValueError("a script is a JSON object mapping prompt text to a list of steps")
    for text, steps in script.items():
        for step in steps if isinstance(steps, list) else [steps]:
            valid = isinstance(step, str) and (
                step in ("ok", "hang", "length") or step.isdigit() or step.startswith(("body:", "reply:"))
                or (step.startswith(("nested:", "huge:")) and step.partition(":")[2].isdigit())
                or (step.startswith("http:") and step.count(":") >= 2 and step.split(":")[1].isdigit()))
            if not valid:
                raise ValueError(f"script entry {text!r}: invalid step {step!r}")


def chat_completion(text, model, finish_reason="stop"):
    return {"id": "fake-completion", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}]}


def load_stories(path):
    """{(noun, verb, adjective, ending): story} of a corpus in make_requests.py's record format."""
    from regional_tinystories.files import input_files, read_input_records
    stories = {}
    for file in input_files([path], recursive=True):
        for _, record in read_input_records(file):
            key = tuple(record.get(field) for field in ("noun", "verb", "adjective", "ending"))
            if all(isinstance(value, str) for value in key) and isinstance(record.get("story"), str):
                stories[key] = record["story"]
    return stories


def fake_scores(text, names=tuple(CANNED_SCORES)):
    """Judge scores for `names` that are a fixed function of the text (of the story a judge prompt quotes), FAKE:
    for offline dry runs of the pipeline, not a judgement. More varied words and more words give higher scores,
    1..10; a score the seed rubric does not have mixes word variety and length, with a fixed offset of its name."""
    import regex
    quoted = regex.findall(r'"""(.*?)"""', text, flags=regex.S)  # a judge prompt quotes the story it is about
    words = regex.findall(r"[\p{L}\p{M}]+", (quoted[-1] if quoted else text).lower())
    if not words:
        return {name: 1 for name in names}
    distinct = len(set(words)) / len(words)
    bigrams = list(zip(words, words[1:]))
    distinct_2 = len(set(bigrams)) / max(len(bigrams), 1)
    length = min(1.0, len(words) / 200)
    clip = lambda x: max(1, min(10, round(x)))  # noqa: E731
    seed = {"context awareness": clip(3 + 6 * distinct_2), "completeness": clip(2 + 8 * length),
            "grammar": clip(4 + 5 * distinct_2), "fluency": clip(3 + 6 * distinct), "creativity": clip(2 + 8 * distinct),
            "overall": clip(2 + 4 * distinct + 4 * length)}
    offset = lambda name: zlib.crc32(name.encode()) % 3 - 1  # noqa: E731
    return {name: seed[name] if name in seed else clip(1 + 4 * distinct + 5 * length + offset(name)) for name in names}


class FakeLLMServer:
    """The server; use it as a context manager in tests (it runs on its own thread):

        with FakeLLMServer(language="hindi") as server:
            server.script["P7"] = ["429", "500", "ok"]
            ... requests to server.base_url ...
            server.prompts  # every prompt received, in arrival order
            server.api_keys  # the bearer token of each request (None without one)
    """

    def __init__(self, delay=0.0, language="english", error_rate=0.0, script=None, seed=0, port=0, stories=None):
        self.delay = delay
        self.canned_reply = json.dumps({"story": CANNED_STORIES[language], **CANNED_SCORES}, ensure_ascii=False)
        self.canned_story = CANNED_STORIES[language]
        self.stories = load_stories(stories) if stories else None
        self.stories_by_noun = {}
        for key in self.stories or {}:
            self.stories_by_noun.setdefault(key[0], []).append(key)
        self.error_rate = error_rate
        check_script(script or {})
        self.script = {text: list(steps) for text, steps in (script or {}).items()}
        self.random = random.Random(seed)
        self.port = port
        self.prompts = []
        self.api_keys = []
        self.huge_bytes_sent = []
        self.base_url = None
        self._stopped = None  # asyncio.Event on the server's loop; releases "hang" requests

    def _next_step(self, prompt):
        for text, steps in self.script.items():
            if text in prompt and steps:
                return steps.pop(0)
        return "500" if self.error_rate and self.random.random() < self.error_rate else "ok"

    async def _chat_completions(self, request):
        try:
            body = await request.json()
            prompt = body["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return web.json_response({"error": {"message": "expected a chat completion request"}}, status=400)
        self.prompts.append(prompt)
        authorization = request.headers.get("Authorization", "")
        self.api_keys.append(authorization.removeprefix("Bearer ") or None)
        step = self._next_step(prompt)
        if step == "hang":
            await self._stopped.wait()
            return web.json_response({"error": {"message": "server stopped"}}, status=503)
        if self.delay:
            await asyncio.sleep(self.delay)
        model = body.get("model", "fake")
        if step == "ok":
            return web.json_response(chat_completion(self.reply_for(prompt), model))
        if step == "length":
            return web.json_response(chat_completion(self.canned_reply[:40], model, finish_reason="length"))
        if step.startswith("reply:"):
            return web.json_response(chat_completion(step[len("reply:"):], model))
        if step.startswith("body:"):
            return web.Response(text=step[len("body:"):], content_type="application/json")
        if step.startswith("http:"):
            _, status, text = step.split(":", 2)
            return web.Response(text=text, status=int(status), content_type="application/json")
        if step.startswith("nested:"):
            return web.json_response(chat_completion("[" * int(step[len("nested:"):]), model))
        if step.startswith("huge:"):
            return await self._huge_reply(request, int(step[len("huge:"):]), model)
        headers = {"Retry-After": "0"} if step == "429" else {}
        return web.json_response({"error": {"message": f"scripted failure {step}"}}, status=int(step),
                                 headers=headers)

    def reply_for(self, prompt):
        """The canned story and canned scores; with --stories, the corpus story whose prompt words these are, and
        scores of the prompt's text. The scores are the ones the prompt asks for; a summary when it asks for one."""
        names = requested_scores(prompt)
        if self.stories is None:
            story, scores = self.canned_story, {name: canned_score(name) for name in names}
        else:
            story, scores = self.story_for(prompt), fake_scores(prompt, names)
        summary = {"summary": first_sentence(story)} if asks_for_summary(prompt) else {}
        return json.dumps({"story": story, **summary, **scores}, ensure_ascii=False)

    def story_for(self, prompt):
        """The corpus story written to the noun, verb, adjective and ending the prompt names (the canned story if
        none)."""
        for noun in (noun for noun in self.stories_by_noun if f'"{noun}"' in prompt):
            match = next((key for key in self.stories_by_noun[noun] if all(f'"{word}"' in prompt for word in key)), None)
            if match:
                return self.stories[match]
        return self.canned_story

    async def _huge_reply(self, request, size, model):
        head, tail = json.dumps(chat_completion("@CONTENT@", model)).encode().split(b"@CONTENT@")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent, chunk = 0, b"a" * 65536
        try:
            await response.write(head)
            while sent < size:
                await response.write(chunk[:size - sent])  # waits while the client is not reading
                sent += min(len(chunk), size - sent)
            await response.write(tail)
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client hung up
            pass
        finally:
            self.huge_bytes_sent.append(sent)
        return response

    async def start(self):
        """Start serving on the running loop; sets base_url (with the real port when port=0)."""
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self):
        self._stopped.set()
        await self._runner.cleanup()

    def __enter__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def serve_forever(server):
    await server.start()
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--language", default="english", choices=sorted(CANNED_STORIES))
    parser.add_argument("--error_rate", type=float, default=0.0, help="answer HTTP 500 to this fraction")
    parser.add_argument("--script", help="JSON file of scripted answers, see above")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stories", help="a corpus (file or folder) whose stories answer the prompts they were "
                                          "written for, with fake scores computed from each prompt (see above)")
    args = parser.parse_args(rename_deprecated_options(sys.argv[1:] if argv is None else list(argv),
                                                       underscored("--error-rate")))
    script = None
    if args.script:
        try:
            with open(args.script, encoding="utf-8") as f:
                script = json.load(f)
            check_script(script)
        except (OSError, ValueError) as e:
            parser.exit(1, f"error: --script {args.script}: {e}\n")
    server = FakeLLMServer(delay=args.delay, language=args.language, error_rate=args.error_rate,
                           script=script, seed=args.seed, port=args.port, stories=args.stories)
    try:
        asyncio.run(serve_forever(server))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
