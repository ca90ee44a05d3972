"""Generated company documents in the formats a company's knowledge base holds, with questions
they answer and near-miss questions they do not: training data for the answerability probe that is
not the company-documents dev set (bench/data/company_docs).

    python bench/synthetic_company.py --out /tmp/synthetic-company --seed 1

Fictional companies, each with a product spec table (Markdown), a policy handbook of numbered
rules (TXT), a service-outlet list (CSV) and an FAQ (Markdown). Values are drawn at random, so a
question is answerable only from its passages. Unanswerable questions are the hard kind: an
attribute the table does not have, a product or a city the documents do not list, a benefit the
handbook does not grant; follow-ups carry the earlier turn as history. Writes documents/ and
questions.jsonl (question, history, answers, answerable, kind).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

COMPANIES = ("青禾科技", "蓝鲸电器", "远帆智能", "松果家居", "北辰健康", "云杉数码", "海棠厨电",
             "启明教育设备", "白鹭户外", "铭泰医疗器械", "知行办公", "禾丰农机")

Value = Callable[[random.Random], str]


def _num(low: float, high: float, unit: str, step: float = 1) -> Value:
    def draw(rng: random.Random) -> str:
        value = round(rng.uniform(low, high) / step) * step
        text = f"{value:g}" if step < 1 else f"{int(value)}"
        return f"{text}{unit}"
    return draw


CATEGORIES: dict[str, tuple[tuple[str, ...], dict[str, Value]]] = {
    "电动牙刷": (("声波电动牙刷", "T"), {
        "续航时间": _num(20, 90, "天"), "充电时间": _num(2, 16, "小时"), "防水等级": lambda r: r.choice(["IPX7", "IPX8"]),
        "刷头转速": _num(20000, 42000, "次/分钟", 1000), "重量": _num(60, 140, "克"),
        "清洁模式": _num(3, 6, "种"), "电池容量": _num(600, 1600, "mAh", 50), "保修期": _num(1, 3, "年")}),
    "咖啡机": (("全自动咖啡机", "C"), {
        "水箱容量": _num(1.0, 2.5, "升", 0.1), "额定功率": _num(1200, 1700, "W", 50),
        "泵压": _num(9, 20, "bar"), "豆仓容量": _num(200, 500, "克", 50), "预热时间": _num(15, 60, "秒", 5),
        "机身重量": _num(6, 14, "千克", 0.5), "研磨档位": _num(5, 15, "档"), "保修期": _num(1, 3, "年")}),
    "路由器": (("无线路由器", "AX"), {
        "无线速率": _num(1800, 6000, "Mbps", 100), "天线数量": _num(4, 8, "根"), "网口数量": _num(3, 5, "个"),
        "带机量": _num(64, 256, "台", 8), "覆盖面积": _num(80, 200, "平方米", 10), "功耗": _num(8, 25, "W"),
        "处理器主频": _num(1.0, 2.2, "GHz", 0.1), "内存": lambda r: r.choice(["256MB", "512MB", "1GB"])}),
    "空调": (("变频空调", "KF"), {
        "制冷量": _num(2500, 7200, "W", 100), "能效等级": lambda r: r.choice(["一级", "二级", "三级"]),
        "适用面积": _num(10, 45, "平方米"), "室内机噪音": _num(18, 42, "分贝"), "制热功率": _num(800, 2400, "W", 50),
        "室外机重量": _num(22, 45, "千克"), "循环风量": _num(450, 1200, "立方米/小时", 10), "保修期": _num(3, 10, "年")}),
    "投影仪": (("家用投影仪", "P"), {
        "亮度": _num(500, 3000, "流明", 50), "分辨率": lambda r: r.choice(["1080P", "4K", "720P"]),
        "投射比": _num(0.2, 1.5, ":1", 0.01), "噪音": _num(22, 35, "分贝"), "存储空间": _num(16, 128, "GB", 16),
        "重量": _num(0.8, 4.5, "千克", 0.1), "灯源寿命": _num(20000, 30000, "小时", 1000), "功率": _num(60, 250, "W", 10)}),
    "电热水器": (("储水式电热水器", "D"), {
        "容量": _num(40, 100, "升", 10), "额定功率": _num(2000, 3300, "W", 100), "最高水温": _num(65, 80, "℃", 5),
        "加热时间": _num(20, 60, "分钟", 5), "内胆材质": lambda r: r.choice(["搪瓷", "不锈钢", "钛金"]),
        "额定压力": _num(0.6, 0.8, "MPa", 0.1), "能效等级": lambda r: r.choice(["一级", "二级"]), "保修期": _num(3, 8, "年")}),
}

POLICIES: dict[str, tuple[str, Value]] = {
    "婚假": ("员工依法登记结婚的，可享受婚假{}。", _num(3, 15, "天")),
    "丧假": ("直系亲属去世的，可享受丧假{}。", _num(1, 5, "天")),
    "年终奖发放时间": ("年终奖于每年{}随工资一并发放。", lambda r: r.choice(["1月", "2月", "春节前", "3月15日前"])),
    "餐补": ("公司每月为全职员工发放餐补{}。", _num(300, 900, "元", 50)),
    "交通补贴": ("每月交通补贴为{}，随当月工资发放。", _num(200, 600, "元", 50)),
    "通讯补贴": ("通讯补贴标准为每月{}。", _num(100, 300, "元", 50)),
    "体检": ("公司每年组织员工体检{}，费用由公司承担。", lambda r: r.choice(["一次", "两次"])),
    "班车": ("公司班车每天早上{}从地铁站发车。", lambda r: r.choice(["7:30", "7:45", "8:00", "8:10"])),
    "内推奖金": ("成功推荐人才入职并通过试用期的，给予推荐人奖金{}。", _num(1000, 8000, "元", 500)),
    "试用期": ("新员工试用期为{}。", lambda r: r.choice(["一个月", "两个月", "三个月", "六个月"])),
    "离职通知期": ("员工离职须提前{}以书面形式通知公司。", lambda r: r.choice(["15天", "30天", "一个月"])),
    "加班餐": ("晚上工作到{}以后的，可报销加班餐费。", lambda r: r.choice(["20:00", "21:00", "21:30"])),
    "打车报销": ("加班至{}以后，打车回家的费用可以凭票报销。", lambda r: r.choice(["22:00", "22:30", "23:00"])),
    "培训预算": ("每位员工每年的外部培训预算为{}。", _num(2000, 10000, "元", 500)),
    "年假": ("员工入职满一年后，每年享有带薪年假{}。", _num(5, 15, "天")),
    "病假工资": ("病假期间按本人工资的{}发放。", lambda r: r.choice(["60%", "70%", "80%", "100%"])),
}
POLICY_QUESTIONS = {
    "婚假": "婚假有几天？", "丧假": "丧假可以休几天？", "年终奖发放时间": "年终奖什么时候发？",
    "餐补": "每个月餐补多少钱？", "交通补贴": "交通补贴每月多少？", "通讯补贴": "通讯补贴是多少？",
    "体检": "公司每年组织几次体检？", "班车": "班车早上几点发车？", "内推奖金": "推荐新人入职有多少奖金？",
    "试用期": "新员工的试用期多长？", "离职通知期": "离职要提前多久通知公司？",
    "加班餐": "工作到几点以后可以报销加班餐？", "打车报销": "加班到几点以后打车可以报销？",
    "培训预算": "每人每年的培训预算是多少？", "年假": "入职满一年后年假有几天？",
    "病假工资": "病假期间工资怎么发？",
}
CITIES = ("北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "长沙",
          "郑州", "沈阳", "青岛", "厦门", "昆明")
STREETS = ("人民路", "中山路", "解放大道", "建设路", "科技园路", "滨江大道", "长江路", "和平街")
FAQ: dict[str, tuple[str, str, Value]] = {
    "包邮门槛": ("订单满多少钱包邮？", "订单满{}包邮，不满的收取运费。", _num(49, 199, "元", 10)),
    "退货期限": ("签收后几天内可以无理由退货？", "签收后{}内可申请无理由退货。", _num(7, 30, "天")),
    "发货时间": ("付款后多久发货？", "付款后{}内发货。", lambda r: r.choice(["24小时", "48小时", "72小时"])),
    "发票": ("电子发票多久开出？", "电子发票在确认收货后{}内发送到邮箱。", lambda r: r.choice(["1个工作日", "3个工作日", "7天"])),
    "积分抵扣": ("多少积分可以抵1元？", "每{}可抵扣1元。", _num(50, 200, "积分", 50)),
    "客服时间": ("人工客服几点下班？", "人工客服服务时间为每天9:00至{}。", lambda r: r.choice(["18:00", "21:00", "22:00"])),
    "以旧换新": ("以旧换新最多抵多少钱？", "以旧换新最高可抵扣{}。", _num(100, 800, "元", 50)),
    "海外配送": ("可以寄到海外吗？运费多少？", "支持海外配送，运费统一为每单{}。", _num(80, 300, "元", 10)),
    "会员有效期": ("会员积分的有效期是多久？", "会员积分有效期为{}，到期自动清零。", lambda r: r.choice(["一年", "两年", "18个月"])),
    "安装费": ("上门安装收费吗？", "上门安装费用为{}。", lambda r: r.choice(["免费", "每台50元", "每台100元"])),
}


def _product_names(rng: random.Random, category: str, count: int) -> list[str]:
    kind, prefix = CATEGORIES[category][0]
    numbers = rng.sample(range(1, 60), count + 2)
    return [f"{prefix}{n}{rng.choice(['', ' Pro', ' Max', 'S'])}".strip() for n in numbers]


def company_documents(rng: random.Random, company: str) -> tuple[dict[str, str], list[dict]]:
    """One company's four documents (name → text) and its questions."""
    documents, questions = {}, []

    def ask(question: str, answers: list[str], kind: str, history: list | None = None) -> None:
        questions.append({"question": question, "history": history or [], "answers": answers,
                          "answerable": bool(answers), "kind": kind, "company": company})

    category = rng.choice(sorted(CATEGORIES))
    (kind, _), attributes = CATEGORIES[category]
    names = _product_names(rng, category, 4)
    shown, listed = rng.sample(sorted(attributes), 5), names[:4]
    missing = [a for a in attributes if a not in shown]
    table = {name: {a: attributes[a](rng) for a in shown} for name in listed}
    lines = [f"# {company}{kind}产品规格表", "", f"本表列出{company}在售{kind}的主要参数。", "",
             "| 型号 | " + " | ".join(shown) + " |", "|" + "---|" * (len(shown) + 1)]
    lines += ["| " + name + " | " + " | ".join(table[name][a] for a in shown) + " |" for name in listed]
    documents[f"{company}{kind}规格表.md"] = "\n".join(lines) + "\n"
    for name in rng.sample(listed, 3):
        attribute = rng.choice(shown)
        ask(f"{name}的{attribute}是多少？", [table[name][attribute]], "table")
        other = rng.choice([a for a in shown if a != attribute])
        ask(f"那它的{other}呢？", [table[name][other]], "table-followup",
            [(f"{name}的{attribute}是多少？", table[name][attribute])])
        ask(f"{name}的{rng.choice(missing)}是多少？", [], "table-missing-attribute")
    absent = names[4]
    ask(f"{kind}{absent}的{rng.choice(shown)}是多少？", [], "table-missing-product")
    first = rng.choice(listed)
    attribute = rng.choice(shown)
    ask(f"那{absent}呢？", [], "table-followup-missing",
        [(f"{first}的{attribute}是多少？", table[first][attribute])])

    granted = rng.sample(sorted(POLICIES), 9)
    values = {p: POLICIES[p][1](rng) for p in granted}
    rules = [f"第{n}条 {POLICIES[p][0].format(values[p])}" for n, p in enumerate(granted, start=1)]
    documents[f"{company}员工福利与考勤制度.txt"] = (f"{company}员工福利与考勤制度\n\n"
                                                   + "\n".join(rules) + "\n")
    for policy in rng.sample(granted, 4):
        ask(POLICY_QUESTIONS[policy], [values[policy]], "policy")
    for policy in rng.sample([p for p in POLICIES if p not in granted], 3):
        ask(POLICY_QUESTIONS[policy], [], "policy-missing")

    cities = rng.sample(CITIES, 7)
    outlets = {c: (f"{c}市{rng.choice(STREETS)}{rng.randint(1, 300)}号",
                   f"0{rng.randint(10, 99)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                   rng.choice(["9:00-18:00", "8:30-17:30", "10:00-20:00"])) for c in cities[:5]}
    rows = ["城市,地址,电话,营业时间"] + [f"{c},{a},{p},{h}" for c, (a, p, h) in outlets.items()]
    documents[f"{company}售后服务网点.csv"] = "\n".join(rows) + "\n"
    for city in rng.sample(cities[:5], 2):
        field, index = rng.choice([("电话", 1), ("地址", 0), ("营业时间", 2)])
        ask(f"{city}售后网点的{field}是什么？", [outlets[city][index]], "outlet")
    for city in cities[5:]:
        ask(f"{city}售后网点的电话是多少？", [], "outlet-missing-city")

    answered = rng.sample(sorted(FAQ), 6)
    faq_values = {f: FAQ[f][2](rng) for f in answered}
    entries = [f"## {FAQ[f][0]}\n\n{FAQ[f][1].format(faq_values[f])}" for f in answered]
    documents[f"{company}常见问题.md"] = f"# {company}常见问题\n\n" + "\n\n".join(entries) + "\n"
    for item in rng.sample(answered, 3):
        ask(FAQ[item][0], [faq_values[item]], "faq")
    for item in rng.sample([f for f in FAQ if f not in answered], 2):
        ask(FAQ[item][0], [], "faq-missing")
    return documents, questions


def generate(seed: int, companies: int) -> tuple[dict[str, str], list[dict]]:
    rng = random.Random(seed)
    documents, questions = {}, []
    for company in rng.sample(COMPANIES, companies):
        docs, asked = company_documents(rng, company)
        documents.update(docs)
        # the company's name in front, as a user of a knowledge base of several companies asks
        questions += [{**q, "question": q["question"] if q["history"] else company + q["question"],
                       "history": [(company + turn[0], turn[1]) for turn in q["history"]]}
                      for q in asked]
    return documents, questions


def write(folder: Path, seed: int, companies: int) -> tuple[list[Path], list[dict]]:
    """The documents as files under folder/documents, and the questions."""
    documents, questions = generate(seed, companies)
    (folder / "documents").mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in documents.items():
        path = folder / "documents" / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    with (folder / "questions.jsonl").open("w", encoding="utf-8") as out:
        for q in questions:
            out.write(json.dumps(q, ensure_ascii=False) + "\n")
    return paths, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--companies", type=int, default=len(COMPANIES))
    args = parser.parse_args()
    paths, questions = write(args.out, args.seed, args.companies)
    print(f"{len(paths)} documents, {len(questions)} questions "
          f"({sum(q['answerable'] for q in questions)} answerable) under {args.out}")


if __name__ == "__main__":
    main()
